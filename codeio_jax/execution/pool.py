"""The sandbox pool: long-lived worker slots, one check in flight per slot.

Each slot is a `worker.py` process started under the configured interpreter; it
preloads the modules CodeI/O programs use, isolates itself once, and forks a fresh
child per check (see worker.py for what a child may and may not do). The host
side here only hands out checks and collects outcomes: one dispatcher thread per
slot, so concurrent callers and `map` share the pool, and a slot that dies is
replaced without stopping the others.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import queue
import secrets
import select
import socket
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable

from codeio_jax.execution.checks import Check, Limits, Outcome

# What CodeI/O programs import most. Every module preloaded makes each fork a
# little dearer, so rarer ones are loaded on demand (checks.ON_DEMAND_MODULES).
DEFAULT_PRELOAD = (
    "itertools", "math", "collections", "heapq", "bisect", "functools", "re", "json",
    "random", "string", "datetime", "copy", "operator", "typing",
)
WORKER_SCRIPT = Path(__file__).with_name("worker.py")
_HEADER = struct.Struct(">I")


class SandboxError(RuntimeError):
    """The sandbox itself could not start or broke (not a check's failure)."""


class ProtectionsMissing(SandboxError):
    """The kernel would not grant a protection the configuration requires."""


# What a slot reports it was granted (slot_isolation.py); each one `require` may name.
PROTECTIONS = ("network_namespace", "mount_namespace", "pid_namespace", "ipc_namespace", "user_namespace",
               "read_only_root", "scratch_tmpfs", "no_new_privs", "unprivileged_uid", "process_group")


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """How the pool runs.

    workers: slots running checks in parallel; None means one per CPU core.
    python: the interpreter checks run under (it needs only the standard library
      and whatever the checked programs import).
    namespaces / drop_privileges: turn the kernel protections off, for debugging
      or for measuring what they cost; the default takes every protection the
      kernel allows.
    scratch_mb: size of each slot's private tmpfs (when a mount namespace exists).
    start_timeout_s: how long a slot may take to start (import its preloads and
      isolate itself) before the sandbox gives up with an error.
    hash_seed: PYTHONHASHSEED of the slots: fixed, so set order of strings is the
      same on every run; another value is another world (data/determinism.py).
    require: protections (PROTECTIONS) without which the sandbox refuses to
      start (ProtectionsMissing) rather than run programs with less.
    """

    workers: int | None = None
    python: str = sys.executable
    limits: Limits = Limits()
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    namespaces: bool = True
    drop_privileges: bool = True
    scratch_mb: int = 64
    start_timeout_s: float = 30.0
    hash_seed: int = 0
    require: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = sorted(set(self.require) - set(PROTECTIONS))
        if unknown:
            raise ValueError(f"unknown protections {unknown}: the sandbox knows {list(PROTECTIONS)}")

    def worker_count(self) -> int:
        if self.workers is not None:
            if self.workers < 1:
                raise ValueError(f"SandboxConfig.workers must be at least 1, got {self.workers}")
            return self.workers
        return len(os.sched_getaffinity(0))


class _Slot:
    """Host-side handle of one worker process."""

    def __init__(self, config: SandboxConfig, index: int, uid: int, scratch_root: Path):
        self.config = config
        self.index = index
        self.uid = uid
        self.scratch_root = scratch_root
        self.process: subprocess.Popen | None = None
        self.protections: dict = {}

    def start(self) -> None:
        self.scratch_root.mkdir(mode=0o711, exist_ok=True)
        os.chmod(self.scratch_root, 0o711)
        worker_cfg = {
            "preload": list(self.config.preload),
            "namespaces": self.config.namespaces,
            "drop_privileges": self.config.drop_privileges,
            "uid": self.uid,
            "gid": self.uid,
            "scratch_root": str(self.scratch_root),
            "scratch_mb": self.config.scratch_mb,
        }
        # A clean environment: the host's variables (API keys among them) never
        # reach a checked program, and a fixed hash seed makes set and dict order
        # of strings the same on every run, which deterministic I/O pairs need.
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": str(self.config.hash_seed),
            "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        try:
            self.process = subprocess.Popen(
                [self.config.python, "-s", str(WORKER_SCRIPT), json.dumps(worker_cfg)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, start_new_session=True, bufsize=0,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox interpreter {self.config.python!r}: {exc}") from exc

    def handshake(self) -> None:
        ready, _, _ = select.select([self.process.stdout], [], [], self.config.start_timeout_s)
        if not ready:
            self.process.kill()
            raise SandboxError(f"sandbox slot {self.index} did not start within "
                               f"{self.config.start_timeout_s} s")
        reply = self._read()
        if reply is None or not reply.get("ready"):
            detail = self._stderr_tail()
            raise SandboxError(f"sandbox slot {self.index} failed to start"
                               + (f": {detail}" if detail else ""))
        self.protections = reply["protections"]

    def run(self, request: dict) -> dict | None:
        """Send one request; None when the worker died."""
        try:
            self._write(request)
        except (BrokenPipeError, OSError):
            return None
        return self._read()

    def stop(self) -> None:
        self.hang_up()
        if self.process is None:
            return
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def hang_up(self) -> None:
        """Close the pipes, which tells the worker to exit."""
        if self.process is None:
            return
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass

    def died_status(self) -> str:
        code = self.process.poll() if self.process else None
        if code is not None and code < 0:
            return f"crashed:{signal.Signals(-code).name}"
        return "crashed:WORKER"

    def _write(self, obj: dict) -> None:
        data = json.dumps(obj).encode("ascii")
        self.process.stdin.write(_HEADER.pack(len(data)) + data)

    def _read(self) -> dict | None:
        header = self._read_exact(_HEADER.size)
        if header is None:
            return None
        body = self._read_exact(_HEADER.unpack(header)[0])
        return None if body is None else json.loads(body)

    def _read_exact(self, n: int) -> bytes | None:
        chunks = []
        while n:
            chunk = self.process.stdout.read(n)
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _stderr_tail(self) -> str:
        try:
            self.process.kill()
            _, err = self.process.communicate(timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return ""
        return err.decode("utf-8", "replace").strip()[-2000:]


class Sandbox:
    """A pool of isolated slots. Use as a context manager, or call close()."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        count = self.config.worker_count()
        self._root = Path(tempfile.mkdtemp(prefix="codeio-sandbox-"))
        os.chmod(self._root, 0o711)
        # Each slot runs its checks as a uid of its own, picked at random so that
        # two pools on one machine do not share uids either.
        uid_base = 100_000 + secrets.randbelow(1 << 24) * 64
        self._slots = [_Slot(self.config, i, uid_base + i, self._root / f"slot{i}")
                       for i in range(count)]
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False
        try:
            for slot in self._slots:
                slot.start()
            for slot in self._slots:
                slot.handshake()
            self._check_required()
        except BaseException:
            self._stop_slots()
            raise
        for slot in self._slots:
            thread = threading.Thread(target=self._dispatch, args=(slot,),
                                      name=f"sandbox-slot-{slot.index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _check_required(self) -> None:
        missing = sorted({name for slot in self._slots for name in self.config.require
                          if slot.protections.get(name) in (None, False, [], "")})
        if missing:
            raise ProtectionsMissing(
                f"the sandbox on {socket.gethostname()} could not get {', '.join(missing)} (required): "
                "`codeio-jax sandbox-check` there shows what the kernel grants; run the workers where "
                "these namespaces are allowed (README: workers that can run the sandbox), or drop them "
                "from the requirement knowingly")

    @property
    def protections(self) -> dict:
        """What the kernel granted, as reported by the first slot."""
        return dict(self._slots[0].protections)

    @property
    def slot_protections(self) -> list[dict]:
        """What each slot was granted (its uid among them)."""
        return [dict(slot.protections) for slot in self._slots]

    @property
    def workers(self) -> int:
        return len(self._slots)

    def submit(self, check: Check) -> concurrent.futures.Future:
        if self._closed:
            raise SandboxError("the sandbox is closed")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((self._request(check), future))
        return future

    def run(self, check: Check) -> Outcome:
        return self.submit(check).result()

    def map(self, checks: Iterable[Check],
            on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        """Run checks in parallel; outcomes in the order of the checks."""
        futures = [self.submit(check) for check in checks]
        outcomes = []
        if on_outcome is not None:
            for future in concurrent.futures.as_completed(futures):
                on_outcome(future.result())
        for future in futures:
            outcomes.append(future.result())
        return outcomes

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._stop_slots()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _stop_slots(self) -> None:
        for slot in self._slots:  # all at once, then wait for each
            slot.hang_up()
        for slot in self._slots:
            slot.stop()
        shutil.rmtree(self._root, ignore_errors=True)

    def _request(self, check: Check) -> dict:
        limits = check.limits or self.config.limits
        return {
            "source": check.source,
            "prelude": check.prelude,
            "entry": check.entry,
            "assert_line": check.assert_line,
            "needs": check.needs(),
            "limits": limits.as_dict(),
        }

    def _dispatch(self, slot: _Slot) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                reply = slot.run(request)
                if reply is None:
                    # The slot itself died (nothing a check can do should cause
                    # this); report it on this check and bring up a fresh slot.
                    status = slot.died_status()
                    slot.stop()
                    slot.start()
                    slot.handshake()
                    future.set_result(Outcome(status=status,
                                              message="the sandbox slot died while running this check"))
                    continue
                future.set_result(Outcome(
                    status=reply["status"], value=reply.get("value"),
                    message=reply.get("message", ""), stdout=reply.get("stdout", ""),
                    stderr=reply.get("stderr", ""), duration_s=reply.get("duration_s", 0.0)))
            except BaseException as exc:  # never leave a caller waiting forever
                future.set_exception(exc)
