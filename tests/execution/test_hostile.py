"""A hostile corpus: every program is contained, and the pool keeps serving.

Each case is a real program run in the real sandbox. After each one we check
from the host that nothing was written outside the scratch folder and that no
process of the sandbox's uids is left alive.
"""

import os
import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest

from codeio_jax.execution import Check, Limits, Sandbox, SandboxConfig

LIMITS = Limits(timeout_s=1.0, memory_mb=512, file_mb=4, processes=32, output_bytes=4096)


@pytest.fixture(scope="module")
def box():
    os.environ["CODEIO_TEST_SECRET"] = "hunter2"
    try:
        with Sandbox(SandboxConfig(workers=2, limits=LIMITS)) as sandbox:
            yield sandbox
    finally:
        del os.environ["CODEIO_TEST_SECRET"]


@pytest.fixture(scope="module")
def host_dir(tmp_path_factory):
    """A world-writable folder on the host with a file in it: a program that can
    write anywhere would change it."""
    path = tmp_path_factory.mktemp("host")
    path.chmod(0o777)
    (path / "keep.txt").write_text("original")
    secret = path / "secret.txt"
    secret.write_text("top secret")
    secret.chmod(0o600)
    return path


def sandbox_uids(box):
    return {p["unprivileged_uid"] for p in box.slot_protections if p["unprivileged_uid"] is not None}


def processes_with_uids(uids):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) in uids:
                found.append(int(entry))
    return found


def run(box, source, **limits):
    limits = Limits(**{**LIMITS.as_dict(), **limits})
    source = textwrap.dedent(source)
    return box.run(Check(source, limits=limits))


@pytest.fixture(autouse=True)
def contained(box, host_dir):
    yield
    assert (host_dir / "keep.txt").read_text() == "original"
    assert sorted(p.name for p in host_dir.iterdir()) == ["keep.txt", "secret.txt"]
    uids = sandbox_uids(box)
    deadline = time.monotonic() + 2
    while processes_with_uids(uids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with_uids(uids) == [], "a sandboxed process outlived its check"
    assert box.run(Check("x = 1")).status == "passed", "the pool stopped serving"


def test_kernel_protections_active(box):
    protections = box.protections
    if os.geteuid() != 0:
        pytest.skip("the full set of protections needs root here")
    for name in ("pid_namespace", "network_namespace", "mount_namespace", "read_only_root",
                 "scratch_tmpfs"):
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


@pytest.mark.parametrize("target", ["{host}/new.txt", "{host}/keep.txt", "/tmp/codeio-escape.txt",
                                    "/dev/shm/codeio-escape", "/etc/codeio-escape"])
def test_writes_outside_scratch_fail(box, host_dir, target):
    path = target.format(host=host_dir)
    outcome = run(box, f"open({path!r}, 'w').write('pwned')")
    assert outcome.status.startswith("error:"), outcome
    assert not os.path.exists("/tmp/codeio-escape.txt")


def test_deleting_host_files_fails(box, host_dir):
    outcome = run(box, f"import os\nos.remove({str(host_dir / 'keep.txt')!r})")
    assert outcome.status.startswith("error:"), outcome


def test_subprocess_cannot_escape(box, host_dir):
    outcome = run(box, f"""
        import subprocess
        subprocess.run(["sh", "-c", "echo pwned > {host_dir}/shell.txt; rm -f {host_dir}/keep.txt"])
        out = subprocess.run(["echo", "child ran"], capture_output=True, text=True).stdout
        print(out)
    """)
    # Running programs is allowed; they are as contained as the check itself.
    assert outcome.status == "passed", outcome
    assert "child ran" in outcome.stdout


def test_exec_never_counts_as_pass(box):
    outcome = run(box, "import os\nos.execv('/bin/true', ['true'])")
    assert outcome.status == "error:SystemExit", outcome


@pytest.mark.parametrize("source", ["import sys\nsys.exit(0)", "raise SystemExit(0)",
                                    "import os\nos._exit(0)", "exit()"])
def test_early_exit_never_counts_as_pass(box, source):
    assert run(box, source).status == "error:SystemExit"


def test_forged_success_frame_is_rejected(box):
    outcome = run(box, """
        import json, os, struct
        body = json.dumps({"nonce": "0" * 32, "ok": True, "value": None}).encode()
        for fd in range(3, 10):
            try:
                os.write(fd, struct.pack(">I", len(body)) + body)
            except OSError:
                pass
        os._exit(0)
    """)
    assert outcome.status == "error:SystemExit", outcome


def test_fork_bomb_is_contained(box):
    outcome = run(box, """
        import os
        while True:
            os.fork()
    """)
    assert outcome.status != "passed"


def test_memory_bomb_is_memory(box):
    assert run(box, "x = bytearray(8 << 30)").status == "memory"
    growing = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))"
    assert run(box, growing, memory_mb=256, timeout_s=5.0).status == "memory"


def test_cpu_loop_ignoring_signals_times_out(box):
    started = time.monotonic()
    outcome = run(box, """
        import signal
        for sig in (signal.SIGXCPU, signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        while True:
            pass
    """)
    assert outcome.status == "timeout", outcome
    assert time.monotonic() - started < 5


def test_sleeping_program_times_out_on_wall_clock(box):
    outcome = run(box, "import time\ntime.sleep(60)")
    assert outcome.status == "timeout", outcome


def test_killing_the_parent_fails(box):
    outcome = run(box, """
        import os, signal
        for pid in (1, os.getppid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except (PermissionError, ProcessLookupError):
                pass
        print("alive")
    """)
    assert outcome.status in ("passed", "crashed:SIGKILL"), outcome


@pytest.mark.parametrize("source", ["import os, signal\nos.killpg(0, signal.SIGKILL)",
                                    "import os, signal\nos.kill(-1, signal.SIGKILL)\nimport time\ntime.sleep(0.5)"])
def test_killing_the_group_or_everything_spares_the_neighbour(box, source):
    # A benign check runs in the other slot while the hostile one fires.
    neighbour = box.submit(Check("import time\ntime.sleep(0.7)\nx = 1", limits=LIMITS))
    time.sleep(0.1)
    hostile = run(box, source)
    assert hostile.status != "passed" or "kill(-1" in source
    assert neighbour.result().status == "passed"


def test_segfault_is_crashed(box):
    outcome = run(box, "import ctypes\nctypes.string_at(0)")
    assert outcome.status == "crashed:SIGSEGV", outcome


def test_output_flood_is_capped(box):
    outcome = run(box, "while True:\n    print('x' * 1000)")
    assert outcome.status != "passed"
    assert len(outcome.stdout) <= 4096 + 100
    assert outcome.stdout.endswith("[output truncated]")


def test_runaway_recursion(box):
    assert run(box, "def r(n):\n    return r(n + 1)\nr(0)").status == "error:RecursionError"
    deep = run(box, "import sys\nsys.setrecursionlimit(10**8)\ndef r(n):\n    return r(n + 1)\nr(0)")
    assert deep.status in ("timeout", "memory", "crashed:SIGSEGV", "error:RecursionError"), deep


def test_hanging_threads_do_not_hold_the_check(box):
    outcome = run(box, """
        import threading, time
        threading.Thread(target=time.sleep, args=(100,)).start()
        threading.Thread(target=time.sleep, args=(100,), daemon=True).start()
    """)
    assert outcome.status == "passed", outcome
    assert outcome.duration_s < 0.9


def test_detached_daemons_are_killed(box):
    outcome = run(box, """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                while True:
                    time.sleep(0.01)
            os._exit(0)
        time.sleep(0.05)
    """)
    assert outcome.status == "passed", outcome  # the autouse fixture checks the daemon is gone


def test_no_network_even_to_loopback(box):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(listener.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    outcome = run(box, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)")
    thread.join()
    listener.close()
    assert outcome.status.startswith("error:"), outcome
    assert accepted == []


def test_huge_files_are_refused(box):
    outcome = run(box, "open('big', 'wb').write(b'0' * (64 << 20))")
    assert outcome.status == "error:OSError", outcome
    sparse = run(box, "f = open('sparse', 'wb')\nf.truncate(1 << 40)")
    assert sparse.status == "error:OSError", sparse


def test_raising_limits_and_privileges_fails(box):
    outcome = run(box, """
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    """)
    assert outcome.status == "error:ValueError", outcome
    if os.geteuid() == 0:
        assert run(box, "import os\nos.setuid(0)").status == "error:PermissionError"


def test_reading_what_it_has_no_business_reading(box, host_dir):
    if os.geteuid() != 0:
        pytest.skip("file permissions only separate users when the sandbox can drop to another uid")
    assert run(box, f"open({str(host_dir / 'secret.txt')!r}).read()").status == "error:PermissionError"
    assert run(box, "open('/etc/shadow').read()").status == "error:PermissionError"
    assert run(box, "import os\nassert 'CODEIO_TEST_SECRET' not in os.environ").status == "passed"
    hidden = run(box, "import os\nprint(sorted(os.listdir(os.path.expanduser('~root'))))")
    assert ".bashrc" not in hidden.stdout and ".ssh" not in hidden.stdout


def test_the_hostile_corpus_leaves_a_working_pool(box):
    outcomes = box.map([Check(f"assert {i} * 2 == {2 * i}") for i in range(20)])
    assert [o.status for o in outcomes] == ["passed"] * 20
