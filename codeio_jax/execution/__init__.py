"""The execution sandbox: run untrusted programs, get one typed outcome each."""

from codeio_jax.execution.checks import (
    FAILED, MEMORY, PASSED, SKIPPED, TIMEOUT, Check, Limits, Outcome, skipped,
)
from codeio_jax.execution.pool import PROTECTIONS, ProtectionsMissing, Sandbox, SandboxConfig, SandboxError

__all__ = [
    "Check", "FAILED", "Limits", "MEMORY", "Outcome", "PASSED", "PROTECTIONS", "ProtectionsMissing", "SKIPPED",
    "Sandbox",
    "SandboxConfig", "SandboxError", "TIMEOUT", "skipped",
]
