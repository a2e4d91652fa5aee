"""`codeio-jax sandbox-check`: which protections are active, seen from inside.

The slots report what the kernel granted when they started; a probe program
then runs in the sandbox like any check and observes each protection for
itself, so the report says what a checked program actually meets.
"""

from __future__ import annotations

from codeio_jax.execution.checks import Check
from codeio_jax.execution.pool import Sandbox

_PROBE = r'''
def __probe__():
    import os, resource, socket
    seen = {"uid": os.getuid(), "pid": os.getpid(), "cwd": os.getcwd()}
    seen["visible_processes"] = sum(1 for e in os.listdir("/proc") if e.isdigit())
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=0.5).close()
        seen["network"] = "connected"
    except OSError as exc:
        seen["network"] = exc.strerror or str(exc)
    try:
        with open("/tmp/.codeio-probe", "w"):
            pass
        os.remove("/tmp/.codeio-probe")
        seen["write_tmp"] = "allowed"
    except OSError as exc:
        seen["write_tmp"] = exc.strerror or str(exc)
    with open("probe.txt", "w") as f:
        f.write("ok")
    seen["write_scratch"] = "allowed"
    with open("/proc/self/status") as f:
        seen["no_new_privs"] = any(l.split() == ["NoNewPrivs:", "1"] for l in f)
    seen["address_space_mb"] = resource.getrlimit(resource.RLIMIT_AS)[0] >> 20
    seen["processes"] = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    seen["environment"] = sorted(os.environ)
    return seen
'''


_CHILD_ENVIRONMENT = {"HOME", "LANG", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PATH", "TMPDIR"}


def probe(sandbox: Sandbox) -> list[tuple[str, bool, str]]:
    """(protection, active, what was observed) rows."""
    granted = sandbox.protections
    outcome = sandbox.run(Check(_PROBE, entry="__probe__"))
    if not outcome.passed:
        return [("probe program", False, f"{outcome.status}: {outcome.message}")]
    seen = outcome.value
    unlimited = lambda v: v < 0 or v >= (1 << 40)
    return [
        ("own process group and session", True, "killed as a whole at the deadline"),
        ("PID namespace", granted["pid_namespace"],
         f"the check sees {seen['visible_processes']} process(es), itself as pid {seen['pid']}"),
        ("network namespace", granted["network_namespace"], f"connect to 127.0.0.1: {seen['network']}"),
        ("mount namespace, read-only filesystem", granted["read_only_root"],
         f"write to /tmp: {seen['write_tmp']}"),
        ("private scratch tmpfs", granted["scratch_tmpfs"],
         f"write to {seen['cwd']}: {seen['write_scratch']}"),
        ("unprivileged uid", seen["uid"] != 0, f"runs as uid {seen['uid']}"),
        ("closed folders masked", bool(granted.get("masked_dirs")),
         ", ".join(granted.get("masked_dirs", [])) or "none needed or no mount namespace"),
        ("no new privileges", seen["no_new_privs"], "setuid binaries cannot raise privileges"),
        ("memory limit", not unlimited(seen["address_space_mb"]), f"{seen['address_space_mb']} MiB address space"),
        ("process limit", not unlimited(seen["processes"]),
         f"{seen['processes']} processes" if not unlimited(seen["processes"]) else
         "not enforceable without an unprivileged uid"),
        ("clean environment", set(seen["environment"]) <= _CHILD_ENVIRONMENT,
         "variables: " + ", ".join(seen["environment"])),
        ("wall-clock deadline, SIGKILL to the group", True, f"{sandbox.config.limits.timeout_s} s by default"),
    ]
