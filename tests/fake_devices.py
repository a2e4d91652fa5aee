"""Run a script in a fresh interpreter that sees N fake CPU devices (XLA's host
platform device count is fixed when jax starts, so a test cannot change its own)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_on_cpu_devices(script: str, devices: int, timeout: float = 600):
    """The JSON value the script prints on its last line; fails the test with its stderr otherwise."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
