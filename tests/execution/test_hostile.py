"""A hostile corpus: every program is contained, and the pool keeps serving.

Each program of codeio_jax/execution/hostile.py runs in the real sandbox; after
each, the host checks that nothing was written outside the scratch folder, no
connection reached its loopback listener and no process of the sandbox's uids
is alive. The tests below the corpus cover what a single program cannot show.
"""

import os
import textwrap
import time

import pytest

from codeio_jax.execution import Check, Limits, Sandbox, SandboxConfig
from codeio_jax.execution.hostile import CORPUS, run_corpus

LIMITS = Limits(timeout_s=1.0, memory_mb=512, file_mb=4, processes=32, output_bytes=4096)


@pytest.fixture(scope="module")
def box():
    os.environ["CODEIO_TEST_SECRET"] = "hunter2"
    try:
        with Sandbox(SandboxConfig(workers=2, limits=LIMITS)) as sandbox:
            yield sandbox
    finally:
        del os.environ["CODEIO_TEST_SECRET"]


def run(box, source, **limits):
    return box.run(Check(textwrap.dedent(source), limits=Limits(**{**LIMITS.as_dict(), **limits})))


@pytest.mark.parametrize("hostile", CORPUS, ids=[h.name for h in CORPUS])
def test_hostile_program_is_contained(box, tmp_path, hostile):
    if hostile.needs_root and os.geteuid() != 0:
        pytest.skip("needs a sandbox that can drop to another uid")
    (result,) = run_corpus(box, tmp_path, corpus=[hostile])
    assert result.contained, f"{result.name}: {result.detail}"


def test_kernel_protections_active(box):
    if os.geteuid() != 0:
        pytest.skip("the full set of protections needs root here")
    protections = box.protections
    for name in ("pid_namespace", "network_namespace", "mount_namespace", "read_only_root", "scratch_tmpfs"):
        assert protections[name], name
    assert protections["unprivileged_uid"] is not None


def test_write_inside_scratch_is_allowed(box):
    outcome = run(box, """
        with open("notes.txt", "w") as f:
            f.write("hello")
        import tempfile
        with tempfile.NamedTemporaryFile() as t:
            t.write(b"x")
        assert open("notes.txt").read() == "hello"
    """)
    assert outcome.status == "passed", outcome


def test_scratch_is_fresh_for_each_check(box):
    assert run(box, "open('leftover.txt', 'w').write('x')").status == "passed"
    for _ in range(3):  # whichever slot runs it, the file is gone
        outcome = run(box, "import os\nassert not os.path.exists('leftover.txt'), os.listdir('.')")
        assert outcome.status == "passed", outcome


@pytest.mark.parametrize("source", ["import os, signal\nos.killpg(0, signal.SIGKILL)",
                                    "import os, signal\nos.kill(-1, signal.SIGKILL)\nimport time\ntime.sleep(0.5)",
                                    "import os\nwhile True:\n    os.fork()"],
                         ids=["killpg", "kill -1", "fork bomb"])
def test_a_hostile_check_spares_the_neighbour(box, source):
    neighbour = box.submit(Check("import time\ntime.sleep(0.7)\nx = 1", limits=LIMITS))
    time.sleep(0.1)
    run(box, source)
    assert neighbour.result().status == "passed"


def test_output_flood_is_capped(box):
    outcome = run(box, "while True:\n    print('x' * 1000)")
    assert outcome.status != "passed"
    assert len(outcome.stdout) <= 4096 + 100
    assert outcome.stdout.endswith("[output truncated]")


def test_hanging_threads_do_not_hold_the_check(box):
    outcome = run(box, "import threading, time\nthreading.Thread(target=time.sleep, args=(100,)).start()")
    assert outcome.status == "passed" and outcome.duration_s < 0.9


def test_host_environment_never_reaches_a_check(box):
    assert run(box, "import os\nassert 'CODEIO_TEST_SECRET' not in os.environ").status == "passed"


def test_closed_host_folders_are_masked(box):
    if os.geteuid() != 0:
        pytest.skip("masking needs a mount namespace and another uid")
    hidden = run(box, "import os\nprint(sorted(os.listdir(os.path.expanduser('~root'))))")
    assert ".bashrc" not in hidden.stdout and ".ssh" not in hidden.stdout


def test_numpy_is_loaded_on_demand(box):
    outcome = run(box, "import numpy as np\nassert int(np.arange(5).sum()) == 10", timeout_s=20.0)
    assert outcome.status == "passed", outcome


def test_the_whole_corpus_leaves_a_working_pool(box):
    outcomes = box.map([Check(f"assert {i} * 2 == {2 * i}") for i in range(20)])
    assert [o.status for o in outcomes] == ["passed"] * 20
