"""One slot of the sandbox pool: a fork server that runs one check at a time.

This file runs as a standalone script under the interpreter the sandbox is
configured with (the CodeI/O authors' `--python_path`), so it imports nothing
from codeio_jax and only the standard library, plus its two sibling modules:
slot_isolation.py (namespaces and mounts, once) and slot_child.py (one check in
the forked child, and its verdict). The host (`pool.py`) talks to it over
stdin/stdout with length-prefixed JSON frames.

Life of a slot:
  1. Preload the modules CodeI/O programs import, so a forked child starts warm.
  2. Isolate itself once: new network, mount, IPC and PID namespaces where the
     kernel allows. In a PID namespace the slot becomes its init (PID 1), which the
     processes it forks cannot signal, and whose death takes every one of them down.
     In the mount namespace every mount is remounted read-only and a size-capped
     tmpfs is mounted for scratch space.
  3. Per check: fork a child into its own session, drop it to the slot's
     unprivileged uid, set rlimits, run the program, report over a pipe; the slot
     enforces the wall-clock deadline with SIGKILL and then kills and reaps
     everything the check left behind, so the next check starts clean. Only one
     check runs in a slot at a time, so no check shares a namespace, a uid or a
     scratch folder with a check running beside it.

A check passes only by reaching the end of the runner, which then writes a frame
tagged with a per-check nonce: exiting early (sys.exit, os._exit, exec) leaves no
such frame. The nonce lives in the child's memory, so a program written to attack
this runner through interpreter introspection could forge it; what the sandbox
guarantees against any program is containment, not an unforgeable verdict.
"""

import json
import os
import resource
import select
import shutil
import signal
import sys
import time

# The siblings are found next to this script; then its folder leaves sys.path,
# so a checked program cannot import the sandbox's own modules by accident.
_HERE = os.path.dirname(os.path.abspath(__file__))
from slot_child import HEADER, PRELUDE_FILENAME, child_main, classify, parse_frame  # noqa: E402
from slot_isolation import PR_SET_PDEATHSIG, isolate, libc  # noqa: E402

sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

# --- framing -----------------------------------------------------------------

def write_frame(fd, obj):
    data = json.dumps(obj).encode("ascii")  # escapes keep lone surrogates valid JSON
    write_all(fd, HEADER.pack(len(data)) + data)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd):
    header = read_exact(fd, HEADER.size)
    if header is None:
        return None
    body = read_exact(fd, HEADER.unpack(header)[0])
    return None if body is None else json.loads(body)


class Slot:
    def __init__(self, cfg, protections):
        self.cfg = cfg
        self.protections = protections
        self.is_init = protections["pid_namespace"]
        self.scratch_root = cfg["scratch_root"]
        self.workdir = os.path.join(self.scratch_root, "work")
        # Captured output goes to root-owned files outside the work folder; the
        # child writes through inherited descriptors and cannot reopen them.
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
        self.out_fd = os.open(os.path.join(self.scratch_root, ".stdout"), flags, 0o600)
        self.err_fd = os.open(os.path.join(self.scratch_root, ".stderr"), flags, 0o600)
        if not self.is_init:
            # Orphans of a check get reparented to us, so we can find and reap them.
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.loaded = set(sys.modules)
        self.preludes = {}
        self.prepare_children()

    def prepare_children(self):
        """Set, once, everything every child inherits unchanged."""
        # Standard streams: stdin reads nothing; stdout and stderr are text
        # wrappers over fds 1 and 2, onto which each child dup2s its capture files.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdin = open(0, "r", closefd=False)
        sys.stdout = open(1, "w", closefd=False, encoding="utf-8", errors="backslashreplace")
        sys.stderr = open(2, "w", closefd=False, encoding="utf-8", errors="backslashreplace")
        # The environment a checked program sees: nothing of the host's.
        os.environ.clear()
        os.environ.update(HOME=self.workdir, TMPDIR=self.workdir, PATH="/usr/local/bin:/usr/bin:/bin",
                          LANG="C.UTF-8", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        # A flood past RLIMIT_FSIZE then fails with an OSError instead of killing
        # the child with SIGXFSZ, which tells the user more.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # No setuid binary can give a child privileges back. The slot itself keeps
        # the right to change uid (setresuid is not an execve).
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)

    def preload(self, modules):
        for name in modules:
            if name not in self.loaded:
                self.loaded.add(name)
                try:
                    __import__(name)
                except Exception:
                    pass  # the program's own import will raise and name the module

    def compiled_prelude(self, text):
        """The prelude's code object, compiled once per slot (children inherit
        it through fork); None when it does not compile, and the child then
        compiles it itself and reports the error."""
        if text not in self.preludes:
            if len(self.preludes) >= 64:
                self.preludes.pop(next(iter(self.preludes)))
            try:
                self.preludes[text] = compile(text, PRELUDE_FILENAME, "exec")
            except (SyntaxError, ValueError):
                self.preludes[text] = None
        return self.preludes[text]

    def run(self, request):
        self.preload(request.get("needs", ()))
        if request.get("prelude"):
            request["prelude_code"] = self.compiled_prelude(request["prelude"])
        limits = request["limits"]
        nonce = os.urandom(16).hex()
        self.reset_workdir()
        for fd in (self.out_fd, self.err_fd):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        read_fd, write_fd = os.pipe()
        started = time.monotonic()
        deadline = started + limits["timeout_s"]
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            child_main(request, nonce, write_fd, self.out_fd, self.err_fd, self.workdir, self.cfg)
        os.close(write_fd)
        try:
            frame, status, cpu_s, timed_out = self.wait(pid, read_fd, deadline, limits)
        finally:
            os.close(read_fd)
        self.sweep(pid)
        duration = time.monotonic() - started
        response = classify(frame, nonce, status, cpu_s, timed_out, request)
        response["duration_s"] = round(duration, 6)
        response["stdout"] = self.captured(self.out_fd, limits["output_bytes"])
        response["stderr"] = self.captured(self.err_fd, limits["output_bytes"])
        return response

    def wait(self, pid, read_fd, deadline, limits):
        """Collect the result frame and the child's exit status, or time out."""
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(read_fd, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        buf = bytearray()
        cap = limits["result_bytes"] + 4096
        status = None
        pipe_open = True
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                events = poller.poll(remaining * 1000)
                for fd, _ in events:
                    if fd == pidfd:
                        _, status, usage = os.wait4(pid, 0)
                        poller.unregister(pidfd)
                    elif fd == read_fd:
                        chunk = os.read(read_fd, 65536)
                        if not chunk:
                            pipe_open = False
                            poller.unregister(read_fd)
                        elif len(buf) <= cap:
                            buf += chunk
                if status is not None:
                    # The child is gone; whatever it wrote is in the pipe already.
                    # A grandchild may hold the pipe open, so do not wait for EOF.
                    if pipe_open:
                        while select.select([read_fd], [], [], 0)[0]:
                            chunk = os.read(read_fd, 65536)
                            if not chunk or len(buf) > cap:
                                break
                            buf += chunk
                    cpu_s = usage.ru_utime + usage.ru_stime
                    return parse_frame(buf), status, cpu_s, False
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            _, status, usage = os.wait4(pid, 0)
            return parse_frame(buf), status, usage.ru_utime + usage.ru_stime, True
        finally:
            os.close(pidfd)

    def sweep(self, pid):
        """Kill and reap everything the check left behind: detached daemons,
        fork-bomb leftovers, processes hiding in new sessions."""
        if self.is_init:
            # As the namespace's init, kill(-1) reaches every other process in it.
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            reap_all()
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.cfg["uid"] is not None:
            # Every process of the slot's uid belongs to this check.
            killer = os.fork()
            if killer == 0:
                try:
                    os.setresuid(self.cfg["uid"], self.cfg["uid"], self.cfg["uid"])
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            os.waitpid(killer, 0)
        # We are a subreaper: anything still alive is a descendant of ours.
        for _ in range(100):
            reap_nonblocking()
            children = children_of(os.getpid())
            if not children:
                return
            for child in children:
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.001)

    def reset_workdir(self):
        try:
            os.rmdir(self.workdir)  # the common case: the last check wrote nothing
        except FileNotFoundError:
            pass
        except OSError:
            remove_tree(self.workdir)
        os.mkdir(self.workdir, 0o700)
        if self.cfg["uid"] is not None:
            os.chown(self.workdir, self.cfg["uid"], self.cfg["gid"])

    @staticmethod
    def captured(fd, cap):
        data = os.pread(fd, cap + 1, 0)
        text = data[:cap].decode("utf-8", "replace")
        if len(data) > cap:
            text += "\n[output truncated]"
        return text


def remove_tree(path):
    def make_writable_and_retry(func, target, _exc):
        # The program may have made its files or folders read-only.
        parent = os.path.dirname(target)
        os.chmod(parent, 0o700)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, 0o700)
        func(target)
    shutil.rmtree(path, onerror=make_writable_and_retry)


def reap_all():
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def reap_nonblocking():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def children_of(parent):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        if int(fields[1]) == parent:
            found.append(int(entry))
    return found


def serve(cfg):
    protections = {"process_group": True}
    for fd in (0, 1, 2):
        os.set_inheritable(fd, True)
    request_fd, response_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    for name in cfg["preload"]:
        try:
            __import__(name)
        except Exception:
            pass
    isolate(cfg, protections)
    root = os.geteuid() == 0 and not protections["user_namespace"]
    if not (root and cfg["drop_privileges"]):
        cfg["uid"] = cfg["gid"] = None
    protections["unprivileged_uid"] = cfg["uid"]
    protections["no_new_privs"] = True
    protections["rlimits"] = ["cpu", "address_space", "file_size", "open_files", "core"] + (
        ["processes"] if cfg["uid"] is not None else [])
    protections["pid"] = os.getpid()
    slot = Slot(cfg, protections)
    write_frame(response_fd, {"ready": True, "protections": protections})
    while True:
        request = read_frame(request_fd)
        if request is None:
            # The host closed the pipe: nothing is left to flush or clean (the
            # last check was swept), so skip the interpreter's slow teardown.
            os._exit(0)
        write_frame(response_fd, slot.run(request))


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
