"""The execution sandbox: run untrusted programs, get one typed outcome each."""

from codeio_jax.execution.checks import (
    FAILED, MEMORY, PASSED, SKIPPED, TIMEOUT, Check, Limits, Outcome, skipped,
)
from codeio_jax.execution.pool import Sandbox, SandboxConfig, SandboxError

__all__ = [
    "Check", "FAILED", "Limits", "MEMORY", "Outcome", "PASSED", "SKIPPED", "Sandbox",
    "SandboxConfig", "SandboxError", "TIMEOUT", "skipped",
]
