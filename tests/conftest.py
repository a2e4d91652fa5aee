"""Shared fixtures: real sandboxes, the shipped data."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The tests run on the CPU. With the tpu extra installed, jax would otherwise
# start libtpu in every process (and in every subprocess a test starts), which
# probes for TPU hosts and logs its failure; compile-only tests ask for TPU
# topologies explicitly and do not need the TPU backend.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(relative: str) -> Path:
    """A file of ../shared/data; skips (outside CI) when the folder is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"{path} is missing; CI always has ../shared/data")
        pytest.skip(f"{path} is absent (../shared/data is not beside this checkout)")
    return path


@pytest.fixture(scope="session")
def sandbox():
    from codeio_jax.execution import Limits, Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(workers=2, limits=Limits(timeout_s=2.0))) as box:
        yield box


@pytest.fixture(scope="session")
def recheck(sandbox):
    """The other world's sandbox (data/determinism.py), beside `sandbox`."""
    from codeio_jax.data.determinism import recheck_sandbox

    with recheck_sandbox(sandbox.config) as box:
        yield box
