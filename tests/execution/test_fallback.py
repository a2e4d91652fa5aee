"""Without namespaces (a kernel that refuses them), the sandbox still contains
processes: the uid of the slot, rlimits, the subreaper sweep and the deadline."""

import os
import time

import pytest

from codeio_jax.execution import Check, Limits, Sandbox, SandboxConfig
from codeio_jax.execution.hostile import processes_with_uids

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the uid-based fallback needs root")
LIMITS = Limits(timeout_s=1.0, memory_mb=512, processes=32)


@pytest.fixture(scope="module")
def box():
    with Sandbox(SandboxConfig(workers=2, limits=LIMITS, namespaces=False)) as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def nothing_left(box):
    yield
    uids = {p["unprivileged_uid"] for p in box.slot_protections}
    deadline = time.monotonic() + 2
    while processes_with_uids(uids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with_uids(uids) == []
    assert box.run(Check("x = 1")).status == "passed"


def test_reports_what_it_lacks(box):
    protections = box.protections
    assert not protections["pid_namespace"] and not protections["network_namespace"]
    assert protections["unprivileged_uid"] is not None


def test_detached_daemon_is_swept(box):
    outcome = box.run(Check(
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(100)\n    os._exit(0)\ntime.sleep(0.05)"))
    assert outcome.status == "passed"


def test_killing_everything_spares_the_neighbour_and_the_host(box):
    neighbour = box.submit(Check("import time\ntime.sleep(0.6)\nx = 1"))
    time.sleep(0.1)
    box.run(Check("import os, signal\nfor pid in (-1, os.getppid(), 1):\n    try:\n"
                  "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass"))
    assert neighbour.result().status == "passed"


def test_fork_bomb_and_memory_and_time(box):
    assert box.run(Check("import os\nwhile True:\n    os.fork()")).status != "passed"
    assert box.run(Check("x = bytearray(4 << 30)")).status == "memory"
    assert box.run(Check("while True:\n    pass")).status == "timeout"
    assert box.run(Check("import os\nos._exit(0)")).status == "error:SystemExit"

