"""One slot of the sandbox pool: a fork server that runs one check at a time.

This file runs as a standalone script under the interpreter the sandbox is
configured with (the CodeI/O authors' `--python_path`), so it imports nothing
from codeio_jax and only the standard library. The host (`pool.py`) talks to it
over stdin/stdout with length-prefixed JSON frames.

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

import ctypes
import errno
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2
MOUNT_OPTION_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

HEADER = struct.Struct(">I")
CHECK_FILENAME = "<check>"

libc = ctypes.CDLL(None, use_errno=True)


# --- framing -----------------------------------------------------------------

def write_frame(fd, obj):
    data = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
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


# --- isolation (once per slot) -------------------------------------------------

def unshare(flags):
    return libc.unshare(flags) == 0


def mount(source, target, fstype, flags, data):
    encode = lambda s: None if s is None else s.encode()
    if libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def write_proc(path, text):
    with open(path, "w") as f:
        f.write(text)


def mount_points():
    """(mount point, per-mount flags) for every mount, parents before children."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            flags = 0
            for option in fields[5].split(","):
                flags |= MOUNT_OPTION_FLAGS.get(option, 0)
            points.append((point, flags))
    return points


def isolate(cfg, protections):
    """Enter new namespaces and lock the filesystem down. Returns True in the
    process that goes on serving (the namespace's init when a PID namespace was
    made); the outer process of a PID namespace waits for it and exits."""
    uid = os.geteuid()
    user_ns = False
    if uid != 0 and cfg["namespaces"]:
        # Unprivileged: a user namespace first, which makes the others possible.
        gid = os.getegid()
        if unshare(CLONE_NEWUSER):
            write_proc("/proc/self/setgroups", "deny")
            write_proc("/proc/self/uid_map", f"0 {uid} 1")
            write_proc("/proc/self/gid_map", f"0 {gid} 1")
            user_ns = True
    protections["user_namespace"] = user_ns
    for name, flag in (("network", CLONE_NEWNET), ("mount", CLONE_NEWNS),
                       ("ipc", CLONE_NEWIPC), ("pid", CLONE_NEWPID)):
        protections[f"{name}_namespace"] = bool(cfg["namespaces"]) and unshare(flag)

    if protections["pid_namespace"]:
        init = os.fork()
        if init:
            # Outer process: nothing to do but mirror the init's fate.
            _, status = os.waitpid(init, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    protections["read_only_root"] = False
    protections["scratch_tmpfs"] = False
    protections["masked_dirs"] = []
    if protections["mount_namespace"]:
        mount(None, "/", None, MS_REC | MS_PRIVATE, None)
        if protections["pid_namespace"]:
            # A /proc of our own: the host's processes (and their environments)
            # are not even visible.
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        if cfg["drop_privileges"] and os.geteuid() == 0 and not user_ns:
            protections["masked_dirs"] = expose_interpreter(cfg["scratch_root"])
        failed = []
        for point, flags in mount_points():
            try:
                mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags, None)
            except OSError:
                failed.append(point)
        protections["read_only_root"] = not failed
        protections["read_only_failures"] = failed[:10]
        mount("tmpfs", cfg["scratch_root"], "tmpfs", MS_NOSUID | MS_NODEV,
              f"size={cfg['scratch_mb']}m,mode=0711")
        protections["scratch_tmpfs"] = True
    return True


def expose_interpreter(staging_root):
    """Let the unprivileged child import from the interpreter's folders.

    The interpreter often lives under a folder others may not enter (/root for a
    pyenv install). Each such folder is covered with an empty tmpfs into which only
    the interpreter's folders are bound back, so the child can import the standard
    library and site-packages and sees nothing else of that folder (no dotfiles,
    no keys). Returns the folders masked this way."""
    needed = {os.path.realpath(p) for p in [sys.prefix, sys.base_prefix, *sys.path]
              if p and os.path.isdir(p)}
    needed = sorted(p for p in needed
                    if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in needed))
    closed = {}
    for path in needed:
        blocker = closed_ancestor(path)
        if blocker is not None:
            closed.setdefault(blocker, []).append(os.path.relpath(path, blocker))
    if not closed:
        return []
    mount("tmpfs", staging_root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0700")
    for i, (blocker, inner) in enumerate(sorted(closed.items())):
        stage = os.path.join(staging_root, str(i))
        os.mkdir(stage, 0o700)
        mount(blocker, stage, None, MS_BIND | MS_REC, None)
        mount("tmpfs", blocker, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for rel in inner:
            target = os.path.join(blocker, rel)
            os.makedirs(target, 0o755, exist_ok=True)
            mount(os.path.join(stage, rel), target, None, MS_BIND | MS_REC, None)
        libc.umount2(stage.encode(), MNT_DETACH)
    libc.umount2(staging_root.encode(), MNT_DETACH)
    return sorted(closed)


def closed_ancestor(path):
    """The topmost folder on `path` that other users cannot enter, if any."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & 0o001:
            return current
    return None


# --- one check -------------------------------------------------------------------

def child_main(request, nonce, result_fd, out_fd, err_fd, workdir, cfg):
    """Runs in the forked child; never returns. Whatever can be prepared once is
    prepared in the slot (Slot.prepare_children), so a child only does what is
    specific to it: its own session, its descriptors, its limits, its uid."""
    # Bind what the runner needs before the program runs: the program shares this
    # interpreter and may rebind os.write, json.dumps or builtins as it likes.
    _write, _exit, _dumps, _pack = os.write, os._exit, json.dumps, HEADER.pack
    limits = request["limits"]
    try:
        os.setsid()
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        keep_fd = 3
        if result_fd != keep_fd:
            os.dup2(result_fd, keep_fd)
        os.closerange(keep_fd + 1, 1 << 20)
        result_fd = keep_fd
        cpu = cpu_seconds(request)
        setrlimit = resource.setrlimit
        setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] << 20,) * 2)
        setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] << 20,) * 2)
        setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
        if cfg["uid"] is not None:
            # RLIMIT_NPROC counts per real uid and is not enforced for root,
            # which is why the uid drop comes with it.
            setrlimit(resource.RLIMIT_NPROC, (limits["processes"],) * 2)
            os.setgroups([])
            os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
            os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        os.chdir(workdir)
    except BaseException as exc:  # the sandbox itself failed to set up: say so
        payload = {"nonce": nonce, "ok": False, "type": "SandboxSetupError",
                   "message": f"{type(exc).__name__}: {exc}", "line": None}
        data = json.dumps(payload).encode()
        os.write(result_fd, HEADER.pack(len(data)) + data)
        os._exit(70)

    payload = run_program(request, nonce)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        data = _dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")
    except BaseException as exc:
        data = _dumps({"nonce": nonce, "ok": False, "type": "TypeError",
                       "message": f"the result is not JSON-serializable: {exc}"[:500],
                       "line": None}).encode()
    if len(data) > request["limits"]["result_bytes"]:
        data = _dumps({"nonce": nonce, "ok": False, "type": "ValueError",
                       "message": f"the result is {len(data)} bytes, over the "
                                  f"{request['limits']['result_bytes']}-byte cap",
                       "line": None}).encode()
    try:
        view = memoryview(_pack(len(data)) + data)
        while view:
            view = view[_write(result_fd, view):]
    finally:
        _exit(0)


def run_program(request, nonce):
    message_cap = request["limits"]["message_chars"]
    try:
        code = compile(request["source"], CHECK_FILENAME, "exec")
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(code, namespace)
        value = None
        if request.get("entry"):
            value = namespace[request["entry"]]()
        return {"nonce": nonce, "ok": True, "value": value}
    except BaseException as exc:
        try:
            message = str(exc)[:message_cap]
        except BaseException:
            message = "<unprintable exception>"
        if isinstance(exc, SystemExit):
            message = (f"sys.exit({message}) was called before the check finished; "
                       "exiting early never counts as passing")
        return {"nonce": nonce, "ok": False, "type": type(exc).__name__[:100],
                "message": message, "line": raising_line(exc)}


def raising_line(exc):
    """The line of the check program's top level at which `exc` was raised
    there, or None when it came from deeper (a function, a library)."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return None
    code = last.tb_frame.f_code
    if code.co_filename == CHECK_FILENAME and code.co_name == "<module>":
        return last.tb_lineno
    return None


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

    def run(self, request):
        self.preload(request.get("needs", ()))
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


def parse_frame(buf):
    if len(buf) < HEADER.size:
        return None
    size = HEADER.unpack_from(buf)[0]
    if len(buf) < HEADER.size + size:
        return None
    try:
        frame = json.loads(bytes(buf[HEADER.size:HEADER.size + size]))
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


def classify(frame, nonce, status, cpu_s, timed_out, request):
    """Exactly one status per check."""
    if frame is not None and frame.get("nonce") != nonce:
        frame = None  # a forged or garbled frame counts as no frame
    if frame is not None and frame.get("ok") and not timed_out:
        return {"status": "passed", "value": frame.get("value"), "message": ""}
    if timed_out:
        return {"status": "timeout", "value": None,
                "message": f"exceeded the {request['limits']['timeout_s']} s wall-clock limit"}
    if frame is not None:
        kind, message = frame.get("type", "Exception"), frame.get("message", "")
        if kind == "MemoryError":
            return {"status": "memory", "value": None,
                    "message": f"exceeded the {request['limits']['memory_mb']} MiB memory limit"}
        assert_line = request.get("assert_line")
        if kind == "AssertionError" and assert_line is not None and frame.get("line") == assert_line:
            return {"status": "failed", "value": None, "message": message}
        return {"status": f"error:{kind}", "value": None, "message": message}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        # SIGXCPU comes from the CPU rlimit, and so does the SIGKILL at its hard
        # limit when the program ignores SIGXCPU: its CPU time tells them apart
        # from a program that kills itself.
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= cpu_seconds(request)):
            return {"status": "timeout", "value": None,
                    "message": f"exceeded the {cpu_seconds(request)} s CPU-time limit"}
        name = signal.Signals(sig).name if sig in signal.Signals.__members__.values() else str(sig)
        return {"status": f"crashed:{name}", "value": None,
                "message": f"killed by {name} before finishing"}
    code = os.waitstatus_to_exitcode(status)
    return {"status": "error:SystemExit", "value": None,
            "message": f"the program exited with code {code} before the check finished; "
                       "exiting early never counts as passing"}


def cpu_seconds(request):
    """The soft RLIMIT_CPU a check runs under: its timeout, rounded up."""
    return max(1, int(request["limits"]["timeout_s"] + 0.999))


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
            return
        write_frame(response_fd, slot.run(request))


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
