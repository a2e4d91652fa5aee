"""One check inside a slot: the forked child's side, and the verdict on it.

Part of the slot (worker.py): standard library only. `child_main` runs in the
forked child and reports one frame over a pipe; `classify` turns that frame (or
its absence) and the child's exit status into exactly one status.
"""

import json
import os
import resource
import signal
import struct
import sys

HEADER = struct.Struct(">I")
CHECK_FILENAME = "<check>"
PRELUDE_FILENAME = "<prelude>"


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
        # ASCII with escapes: a lone surrogate in a result stays valid JSON text.
        data = _dumps(payload, allow_nan=False).encode("ascii")
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
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        if request.get("prelude"):
            prelude = request.get("prelude_code") or compile(request["prelude"], PRELUDE_FILENAME, "exec")
            exec(prelude, namespace)
        code = compile(request["source"], CHECK_FILENAME, "exec")
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
