"""Isolating a sandbox slot, once, when it starts: namespaces and mounts.

Part of the slot (worker.py): standard library only. Where the kernel refuses
a namespace the slot goes on without it and says so in its protections.
"""

import ctypes
import os
import signal
import sys

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

libc = ctypes.CDLL(None, use_errno=True)


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
