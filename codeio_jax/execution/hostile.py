"""A corpus of hostile programs, and a check that the sandbox contains each one.

Used by the tests, by `codeio-jax sandbox-check --hostile` (so a user can see
containment on their own machine) and by benchmarks/hostile_corpus.py.

After every program the host checks that it was contained: a world-writable
canary folder is unchanged, a listener on loopback received no connection, no
process of the sandbox's uids is alive, and the pool still runs a check. Some
programs are allowed several statuses (a fork bomb may end in an error or a
timeout); none of them may pass where passing would mean escaping.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import textwrap
import threading
import time
from pathlib import Path

from codeio_jax.execution.checks import Check
from codeio_jax.execution.pool import Sandbox

ANY_FAILURE = "not passed"
ANY_STATUS = "any status"  # what matters is only that the program was contained


@dataclasses.dataclass(frozen=True)
class Hostile:
    name: str
    source: str  # may use {canary} (a world-writable host folder) and {port} (a loopback listener)
    expect: tuple[str, ...]  # acceptable statuses, or ANY_FAILURE
    limits: dict = dataclasses.field(default_factory=dict)
    needs_root: bool = False  # only meaningful when the sandbox can drop to another uid


CORPUS: tuple[Hostile, ...] = (
    Hostile("write outside scratch", "open('{canary}/new.txt', 'w').write('pwned')", (ANY_FAILURE,)),
    Hostile("overwrite a host file", "open('{canary}/keep.txt', 'w').write('pwned')", (ANY_FAILURE,)),
    Hostile("write to /tmp", "open('/tmp/codeio-escape', 'w').write('pwned')", (ANY_FAILURE,)),
    Hostile("write to /dev/shm", "open('/dev/shm/codeio-escape', 'w').write('pwned')", (ANY_FAILURE,)),
    Hostile("write to /etc", "open('/etc/codeio-escape', 'w').write('pwned')", (ANY_FAILURE,)),
    Hostile("delete a host file", "import os\nos.remove('{canary}/keep.txt')", (ANY_FAILURE,)),
    Hostile("rename a host file", "import os\nos.rename('{canary}/keep.txt', '{canary}/moved.txt')",
            (ANY_FAILURE,)),
    Hostile("subprocess writes and deletes", """
        import subprocess
        subprocess.run(["sh", "-c", "echo pwned > {canary}/shell.txt; rm -f {canary}/keep.txt"])
    """, ("passed",)),
    Hostile("exec another program", "import os\nos.execv('/bin/true', ['true'])", ("error:SystemExit",)),
    Hostile("sys.exit(0)", "import sys\nsys.exit(0)", ("error:SystemExit",)),
    Hostile("os._exit(0)", "import os\nos._exit(0)", ("error:SystemExit",)),
    Hostile("forge a success frame", """
        import json, os, struct
        body = json.dumps({{"nonce": "0" * 32, "ok": True, "value": None}}).encode()
        for fd in range(3, 10):
            try:
                os.write(fd, struct.pack(">I", len(body)) + body)
            except OSError:
                pass
        os._exit(0)
    """, ("error:SystemExit",)),
    Hostile("fork bomb", "import os\nwhile True:\n    os.fork()", (ANY_FAILURE,)),
    Hostile("memory bomb", "x = bytearray(64 << 30)", ("memory",)),
    Hostile("growing memory", "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))",
            ("memory",), {"memory_mb": 256, "timeout_s": 5.0}),
    Hostile("CPU loop ignoring signals", """
        import signal
        for sig in (signal.SIGXCPU, signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        while True:
            pass
    """, ("timeout",)),
    Hostile("sleep forever", "import time\ntime.sleep(3600)", ("timeout",)),
    Hostile("kill the parent", """
        import os, signal
        for pid in (1, os.getppid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    """, ("passed", "crashed:SIGKILL")),
    Hostile("kill the group", "import os, signal\nos.killpg(0, signal.SIGKILL)", ("crashed:SIGKILL",)),
    Hostile("kill everything", "import os, signal\nos.kill(-1, signal.SIGKILL)", (ANY_STATUS,)),
    Hostile("segfault", "import ctypes\nctypes.string_at(0)", ("crashed:SIGSEGV",)),
    Hostile("output flood", "while True:\n    print('x' * 1000)", (ANY_FAILURE,)),
    Hostile("runaway recursion", "def r(n):\n    return r(n + 1)\nr(0)", ("error:RecursionError",)),
    Hostile("deep recursion past the limit",
            "import sys\nsys.setrecursionlimit(10**8)\ndef r(n):\n    return r(n + 1)\nr(0)", (ANY_FAILURE,)),
    Hostile("hanging threads", """
        import threading, time
        threading.Thread(target=time.sleep, args=(3600,)).start()
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    """, ("passed",)),
    Hostile("detached daemon", """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                while True:
                    time.sleep(0.01)
            os._exit(0)
        time.sleep(0.05)
    """, ("passed",)),
    Hostile("connect to a loopback listener",
            "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)", (ANY_FAILURE,)),
    Hostile("huge file", "open('big', 'wb').write(b'0' * (64 << 20))", ("error:OSError",)),
    Hostile("sparse huge file", "f = open('sparse', 'wb')\nf.truncate(1 << 40)", ("error:OSError",)),
    Hostile("raise its own limits", """
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    """, ("error:ValueError",)),
    Hostile("become root", "import os\nos.setuid(0)", ("error:PermissionError",), needs_root=True),
    Hostile("read a root-only host file", "open('{canary}/secret.txt').read()", ("error:PermissionError",),
            needs_root=True),
    Hostile("read /etc/shadow", "open('/etc/shadow').read()", (ANY_FAILURE,), needs_root=True),
    Hostile("read the host's environment", """
        import os
        assert set(os.environ) <= {{"HOME", "LANG", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PATH", "TMPDIR"}}
    """, ("passed",)),
    Hostile("read other processes' environments", """
        import os
        readable = []
        for pid in [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:
            try:
                open(f'/proc/{{pid}}/environ', 'rb').read()
                readable.append(pid)
            except OSError:
                pass
        assert readable == [], readable
    """, ("passed",), needs_root=True),
)


@dataclasses.dataclass(frozen=True)
class Containment:
    name: str
    status: str
    contained: bool
    detail: str = ""


def run_corpus(sandbox: Sandbox, canary: Path, corpus=CORPUS, timeout_s: float = 1.0) -> list[Containment]:
    """Run each hostile program and check, from the host, that it was contained.

    `canary` must be an empty folder; it is made world-writable and given files
    a program could change if it escaped."""
    root = os.geteuid() == 0 and sandbox.protections.get("unprivileged_uid") is not None
    canary.chmod(0o777)
    (canary / "keep.txt").write_text("original")
    secret = canary / "secret.txt"
    secret.write_text("top secret")
    secret.chmod(0o600)
    listener, accepted, stop = _listen()
    uids = {p["unprivileged_uid"] for p in sandbox.slot_protections if p["unprivileged_uid"] is not None}
    results = []
    try:
        for hostile in corpus:
            if hostile.needs_root and not root:
                continue
            limits = dataclasses.replace(sandbox.config.limits,
                                         **{"timeout_s": timeout_s, "memory_mb": 512, **hostile.limits})
            source = textwrap.dedent(hostile.source).format(canary=canary, port=listener.getsockname()[1])
            outcome = sandbox.run(Check(source, limits=limits))
            problems = []
            ok_status = outcome.status in hostile.expect or ANY_STATUS in hostile.expect or (
                ANY_FAILURE in hostile.expect and outcome.status != "passed")
            if not ok_status:
                problems.append(f"status {outcome.status}, expected {' or '.join(hostile.expect)}")
            problems += _escapes(canary, accepted, uids)
            if sandbox.run(Check("x = 1")).status != "passed":
                problems.append("the pool stopped serving")
            results.append(Containment(hostile.name, outcome.status, not problems, "; ".join(problems)))
    finally:
        stop.set()
        listener.close()
    return results


def _listen():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    accepted: list = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                accepted.append(conn)
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    return listener, accepted, stop


def _escapes(canary: Path, accepted: list, uids: set) -> list[str]:
    problems = []
    if (canary / "keep.txt").read_text() != "original":
        problems.append("a host file was changed")
    extra = sorted(p.name for p in canary.iterdir()) != ["keep.txt", "secret.txt"]
    escaped = ("/tmp/codeio-escape", "/etc/codeio-escape", "/dev/shm/codeio-escape")
    if extra or any(os.path.exists(p) for p in escaped):
        problems.append("a file was written outside the scratch folder")
    if accepted:
        problems.append("a connection reached the host's loopback")
    deadline = time.monotonic() + 2.0
    while processes_with_uids(uids) and time.monotonic() < deadline:
        time.sleep(0.02)
    if processes_with_uids(uids):
        problems.append("a process outlived its check")
    return problems


def processes_with_uids(uids: set) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) in uids:
                            found.append(int(entry))
                        break
        except OSError:
            continue
    return found
