"""Real binaries on the simulated kernel: seccomp user notification (Linux >= 5.6, x86_64).

`khofs run` and `attach` fork a child that calls run() (`python -m khofs.intercept ROOT ...
-- CMD` does the same standalone).  That process forks CMD; the child installs a seccomp
filter that turns kexec_load, kexec_file_load, reboot, mount and fsopen into notifications,
hands the listener fd back over a socketpair (SCM_RIGHTS), closes it and execs CMD.  The
filter is inherited by every descendant and cannot be removed, so those calls never reach the
host's kernel: they wait until this supervisor answers them from the machine at ROOT, through the
control channel ROOT/khofs/syscall (so the supervisor needs no machine of its own).

- kexec_file_load: the image and initrd are read through the caller's fds
  (pidfd_getfd), the command line from its memory (process_vm_readv).
- reboot: LINUX_REBOOT_CMD_KEXEC and RESTART switch the machine's kernel and then
  end the caller with status 0 (the call never returns on Linux; the shell that ran
  `kexec -e` carries on in the new kernel, as khofs's user space always does);
  HALT and POWER_OFF stop the machine and kill CMD and all its descendants.
- mount of debugfs, proc or sysfs binds the machine's files at the target
  (resolved from the caller's root and cwd); every other mount continues to the host.
  fsopen of those three fails with ENOSYS, so libmount falls back to mount(2).

Every notification is checked with SECCOMP_IOCTL_NOTIF_ID_VALID after reading the
caller's memory and fds and before acting on them.  Any failure of the supervisor
kills CMD's whole tree (this process is its child subreaper); a supervisor that is
itself killed leaves CMD to PR_SET_PDEATHSIG and every pending or later call to the
kernel's ENOSYS for a filter without a listener: nothing is ever let through.
"""

import argparse
import contextlib
import ctypes
import errno
import os
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass

from sim.kernel.kexec_file import KEXEC_FILE_NO_INITRAMFS, KMALLOC_MAX_SIZE, kernel_read_file_from_fd
from sim.kernel.reboot import LINUX_REBOOT_CMD_RESTART2, REBOOT_CMDS_NO_RETURN, REBOOT_CMDS_STOP

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl, syscall_32.tbl).
_NR_SECCOMP, _NR_PIDFD_OPEN, _NR_PIDFD_GETFD, _NR_PROCESS_VM_READV = 317, 434, 438, 310
_NR_OPEN_TREE, _NR_MOVE_MOUNT = 428, 429
_X32_SYSCALL_BIT = 0x40000000
AUDIT_ARCH_X86_64, AUDIT_ARCH_I386 = 0xC000003E, 0x40000003
# The calls the filter hands to the supervisor, by (arch, nr).
INTERCEPTED: dict[tuple[int, int], str] = {
    (AUDIT_ARCH_X86_64, 246): "kexec_load", (AUDIT_ARCH_X86_64, 320): "kexec_file_load",
    (AUDIT_ARCH_X86_64, 169): "reboot", (AUDIT_ARCH_X86_64, 165): "mount",
    (AUDIT_ARCH_X86_64, 430): "fsopen",
    (AUDIT_ARCH_X86_64, _X32_SYSCALL_BIT | 528): "kexec_load",
    (AUDIT_ARCH_X86_64, _X32_SYSCALL_BIT | 320): "kexec_file_load",
    (AUDIT_ARCH_X86_64, _X32_SYSCALL_BIT | 169): "reboot",
    (AUDIT_ARCH_X86_64, _X32_SYSCALL_BIT | 165): "mount",
    (AUDIT_ARCH_X86_64, _X32_SYSCALL_BIT | 430): "fsopen",
    (AUDIT_ARCH_I386, 283): "kexec_load", (AUDIT_ARCH_I386, 88): "reboot",
    (AUDIT_ARCH_I386, 21): "mount", (AUDIT_ARCH_I386, 430): "fsopen",
}
# exit_group, by arch: how a caller whose reboot succeeded is ended.
_NR_EXIT_GROUP = {AUDIT_ARCH_X86_64: 231, AUDIT_ARCH_I386: 252}

# include/uapi/linux/seccomp.h, filter.h, bpf_common.h
SECCOMP_SET_MODE_FILTER, SECCOMP_GET_ACTION_AVAIL = 1, 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_ALLOW, SECCOMP_RET_USER_NOTIF = 0x7FFF0000, 0x7FC00000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_IOCTL_NOTIF_RECV, SECCOMP_IOCTL_NOTIF_SEND = 0xC0502100, 0xC0182101
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06
_NOTIF = struct.Struct("=QII iIQ6Q")          # struct seccomp_notif (with struct seccomp_data)
_RESP = struct.Struct("=QqiI")                # struct seccomp_notif_resp

# include/uapi/linux/{prctl,capability,mount,ptrace,sched}.h
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 24, 38, 36
CAP_SYS_ADMIN, CAP_SYS_BOOT = 21, 22
CLONE_NEWNET = 0x40000000
MS_REMOUNT, MS_BIND, MS_MOVE = 0x20, 0x1000, 0x2000
MS_UNBINDABLE, MS_PRIVATE, MS_SLAVE, MS_SHARED = 1 << 17, 1 << 18, 1 << 19, 1 << 20
_MS_NOT_A_NEW_MOUNT = MS_REMOUNT | MS_BIND | MS_MOVE | MS_UNBINDABLE | MS_PRIVATE | MS_SLAVE | MS_SHARED
OPEN_TREE_CLONE, AT_RECURSIVE, AT_FDCWD = 1, 0x8000, -100
MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH = 0x4, 0x40
MNT_DETACH = 2
PTRACE_CONT, PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_DETACH = 7, 12, 13, 17
PTRACE_SEIZE, PTRACE_INTERRUPT = 0x4206, 0x4207
_REG_RBX, _REG_RDI, _REG_ORIG_RAX, _NREGS = 5, 14, 15, 27     # struct user_regs_struct
PATH_MAX = 4096

# What `mount -t T` of a kernel file system binds, as a path in the khofs mount.
MACHINE_FILESYSTEMS = {"debugfs": "sys/kernel/debug", "proc": "proc", "sysfs": "sys"}


UNAVAILABLE_WARNING = ("khofs: warning: seccomp user notification is unavailable ({}): kexec is the "
                       "Python clone and raw kexec/reboot calls are not simulated")


class Unavailable(Exception):
    """Seccomp user notification cannot be used here; the message says why."""


def _check(ret: int) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _syscall(nr: int, *args: int | ctypes.Array | ctypes.c_void_p | None) -> int:
    return _check(_libc.syscall(ctypes.c_long(nr), *[
        ctypes.c_long(a) if isinstance(a, int) else a for a in args]))


def bpf_filter() -> bytes:
    """The classic-BPF program: notify on INTERCEPTED, allow everything else."""
    prog: list[tuple[int, int, int, int]] = []
    by_arch: dict[int, list[int]] = {}
    for arch, nr in INTERCEPTED:
        by_arch.setdefault(arch, []).append(nr)
    prog.append((_BPF_LD_W_ABS, 0, 0, 4))                       # A = seccomp_data.arch
    for arch, nrs in by_arch.items():
        # jeq arch: fall into this arch's block, else skip over it (2 + len(nrs) + 1 insns).
        prog.append((_BPF_JEQ_K, 0, len(nrs) + 2, arch))
        prog.append((_BPF_LD_W_ABS, 0, 0, 0))                   # A = seccomp_data.nr
        for i, nr in enumerate(nrs):
            prog.append((_BPF_JEQ_K, len(nrs) - i, 0, nr))     # to the USER_NOTIF return
        prog.append((_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
        prog.append((_BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF))
        prog.append((_BPF_LD_W_ABS, 0, 0, 4))                   # reload arch for the next block
    prog[-1] = (_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)            # an arch we do not know: as before
    return b"".join(struct.pack("=HBBI", *insn) for insn in prog)


def user_notif_available() -> str | None:
    """None when SECCOMP_RET_USER_NOTIF works on this kernel, else why not."""
    if os.uname().machine != "x86_64":
        return f"the supervisor knows x86_64 system calls only, not {os.uname().machine}"
    action = ctypes.c_uint32(SECCOMP_RET_USER_NOTIF)
    try:
        _syscall(_NR_SECCOMP, SECCOMP_GET_ACTION_AVAIL, 0, ctypes.cast(ctypes.byref(action), ctypes.c_void_p))
    except OSError as e:
        return f"seccomp(SECCOMP_GET_ACTION_AVAIL, SECCOMP_RET_USER_NOTIF): {e.strerror}"
    return None


def install_filter() -> int:
    """Install the filter in this process (before exec) and return the listener fd."""
    code = bpf_filter()
    buf = ctypes.create_string_buffer(code, len(code))
    prog = struct.pack("=HxxxxxxQ", len(code) // 8, ctypes.addressof(buf))
    fprog = ctypes.create_string_buffer(prog, len(prog))
    if not _has_cap(_proc_read("/proc", "self/status"), CAP_SYS_ADMIN):
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    try:
        return _syscall(_NR_SECCOMP, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                        ctypes.cast(fprog, ctypes.c_void_p))
    except OSError as e:       # EBUSY: an outer khofs run already listens on this process tree
        raise Unavailable(f"seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER): {e.strerror}") from None


def _status_field(status: str, key: str) -> list[str]:
    """The values of one `Key:` line of /proc/PID/status (empty if it has none)."""
    for line in status.splitlines():
        if line.startswith(f"{key}:"):
            return line.split()[1:]
    return []


def _has_cap(status: str, cap: int) -> bool:
    eff = _status_field(status, "CapEff")
    return bool(eff) and bool(int(eff[0], 16) >> cap & 1)


def _proc_read(proc: str | int, rel: str) -> str:
    fd = os.open(rel if isinstance(proc, int) else os.path.join(proc, rel), os.O_RDONLY,
                 dir_fd=proc if isinstance(proc, int) else None)
    try:
        return os.read(fd, 1 << 16).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _loopback_up() -> None:
    """A fresh network namespace has `lo` down; bring it up (SIOCGIFFLAGS/SIOCSIFFLAGS)."""
    import fcntl
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifreq))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))    # IFF_UP


# -- the caller: its memory and fds --

class CallerGone(Exception):
    """The notification is no longer valid: the caller died or was interrupted."""


@dataclass
class Notification:
    id: int
    pid: int
    name: str
    arch: int
    args: tuple[int, ...]

    def arg_int(self, i: int) -> int:
        """An `int` argument (fds, magics): the low 32 bits, signed."""
        return ctypes.c_int32(self.args[i] & 0xFFFFFFFF).value

    def arg_ulong(self, i: int) -> int:
        return self.args[i] & (0xFFFFFFFF if self.arch == AUDIT_ARCH_I386 else (1 << 64) - 1)


def read_memory(pid: int, addr: int, size: int) -> bytes | None:
    """process_vm_readv: all `size` bytes at `addr` in `pid`, or None where copy_from_user faults."""
    if size == 0:
        return b""
    buf = ctypes.create_string_buffer(size)
    local = struct.pack("=QQ", ctypes.addressof(buf), size)
    remote = struct.pack("=QQ", addr, size)
    try:
        got = _syscall(_NR_PROCESS_VM_READV, pid, ctypes.c_char_p(local), 1, ctypes.c_char_p(remote), 1, 0)
    except OSError as e:
        if e.errno == errno.ESRCH:
            raise CallerGone from None
        return None
    return buf.raw[:size] if got == size else None


def read_string(pid: int, addr: int, limit: int) -> bytes | None:
    """strncpy_from_user: bytes up to the NUL or `limit`, or None on a fault before either."""
    out = bytearray()
    while len(out) < limit:
        chunk = min(limit - len(out), 4096 - (addr + len(out)) % 4096)
        data = read_memory(pid, addr + len(out), chunk)
        if data is None:
            return None
        nul = data.find(b"\0")
        if nul >= 0:
            return bytes(out + data[:nul])
        out += data
    return bytes(out)


class Supervisor:
    """Answers the notifications of one listener fd from the machine behind `root`."""

    def __init__(self, listener: int, root: str, child: int) -> None:
        self.listener = listener
        self.root = root
        self.child = child
        self.proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)   # survives a bind over /proc
        self.mounts: list[str] = []
        self.halted = ""            # the console line of a halt or power-off, once it happened

    # -- the notification protocol --

    def recv(self) -> Notification | None:
        buf = ctypes.create_string_buffer(_NOTIF.size)
        try:
            _check(_libc.ioctl(self.listener, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_RECV), buf))
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINTR):      # the caller went away first
                return None
            raise
        nid, pid, _flags, nr, arch, _ip, *args = _NOTIF.unpack(buf.raw)
        name = INTERCEPTED.get((arch, nr & 0xFFFFFFFF))
        if name is None:
            raise RuntimeError(f"notification for a call the filter does not select: arch {arch:#x} nr {nr}")
        return Notification(nid, pid, name, arch, tuple(args))

    def valid(self, n: Notification) -> None:
        """SECCOMP_IOCTL_NOTIF_ID_VALID: what was read of the caller is still the caller's."""
        nid = ctypes.c_uint64(n.id)
        if _libc.ioctl(self.listener, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_ID_VALID), ctypes.byref(nid)) < 0:
            raise CallerGone

    def reply(self, n: Notification, val: int = 0, error: int = 0, flags: int = 0) -> None:
        resp = ctypes.create_string_buffer(_RESP.pack(n.id, val, -error if error else 0, flags), _RESP.size)
        if _libc.ioctl(self.listener, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_SEND), resp) < 0:
            if ctypes.get_errno() != errno.ENOENT:              # ENOENT: the caller was killed meanwhile
                err = ctypes.get_errno()
                raise OSError(err, f"SECCOMP_IOCTL_NOTIF_SEND: {os.strerror(err)}")

    def handle(self, n: Notification) -> None:
        handler: Callable[[Notification], None] = getattr(self, f"sys_{n.name}")
        try:
            handler(n)
        except CallerGone:
            pass

    # -- the machine, through the control channel --

    def call(self, request: dict[str, object], *payload: bytes) -> int:
        """One control-channel call: 0 or the positive errno the simulated kernel returned.

        A machine that cannot be reached (its mount gone) is the supervisor's failure; an
        error on the open channel (EIO: a simulator bug the mount survived) is the caller's.
        """
        fd = os.open(os.path.join(self.root, "khofs/syscall"), os.O_RDWR)
        try:
            view = memoryview(_json_line(request) + b"".join(payload))
            while view:
                view = view[os.write(fd, view[:1 << 20]):]
            reply = os.read(fd, 64)
        except OSError as e:
            return e.errno or errno.EIO
        finally:
            os.close(fd)
        return -int(reply) if reply.strip() != b"0" else 0

    # -- the system calls --

    def _caller_status(self, n: Notification) -> str:
        """/proc/PID/status of the caller; CallerGone if it was killed mid-call (ENOENT, ESRCH)."""
        try:
            status = _proc_read(self.proc, f"{n.pid}/status")
        except OSError:
            raise CallerGone from None
        if not _status_field(status, "Uid"):
            raise CallerGone
        return status

    def _root_caller(self, n: Notification) -> bool:
        """The simulated kernel grants CAP_SYS_BOOT to a caller whose effective uid is 0."""
        return _status_field(self._caller_status(n), "Uid")[1] == "0"

    def sys_kexec_load(self, n: Notification) -> None:
        self.reply(n, error=errno.ENOSYS)          # CONFIG_KEXEC=n: sys_ni_syscall

    def _user_file(self, pidfd: int, fd: int, name: str, request: dict[str, object]) -> bytes:
        """kernel_read_file_from_fd() on the caller's fd, as `<name>_len` or `<name>_err`."""
        try:
            mine = _syscall(_NR_PIDFD_GETFD, pidfd, fd, 0)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise CallerGone from None
            return _put(request, name, -errno.EBADF)
        try:
            return _put(request, name, kernel_read_file_from_fd(mine))
        finally:
            os.close(mine)

    def sys_kexec_file_load(self, n: Notification) -> None:
        if not self._root_caller(n):
            return self.reply(n, error=errno.EPERM)         # kexec_load_permitted()
        kernel_fd, initrd_fd = n.arg_int(0), n.arg_int(1)
        cmdline_len, cmdline_ptr, flags = n.arg_ulong(2), n.arg_ulong(3), n.arg_ulong(4)
        request: dict[str, object] = {"call": "kexec_file_load", "flags": flags}
        try:
            pidfd = _syscall(_NR_PIDFD_OPEN, n.pid, 0)
        except OSError:
            raise CallerGone from None
        try:
            self.valid(n)                       # the pidfd is the caller's
            kernel = self._user_file(pidfd, kernel_fd, "kernel", request)
            initrd = b""
            if not flags & KEXEC_FILE_NO_INITRAMFS:
                initrd = self._user_file(pidfd, initrd_fd, "initrd", request)
        finally:
            os.close(pidfd)
        if cmdline_len > KMALLOC_MAX_SIZE:      # memdup_user(): kmalloc fails
            cmdline = _put(request, "cmdline", -errno.ENOMEM)
        else:
            cmdline = _put(request, "cmdline", read_memory(n.pid, cmdline_ptr, cmdline_len))
        self.valid(n)
        err = self.call(request, kernel, initrd, cmdline)
        self.reply(n, error=err)

    def sys_reboot(self, n: Notification) -> None:
        if not self._root_caller(n):
            return self.reply(n, error=errno.EPERM)         # CAP_SYS_BOOT
        cmd = n.arg_int(2) & 0xFFFFFFFF
        request: dict[str, object] = {"call": "reboot", "magic1": n.arg_int(0), "magic2": n.arg_int(1),
                                      "cmd": cmd}
        arg = b""
        if cmd == LINUX_REBOOT_CMD_RESTART2:
            arg = _put(request, "arg", read_string(n.pid, n.arg_ulong(3), 255))
        self.valid(n)
        err = self.call(request, arg)
        if err or cmd not in REBOOT_CMDS_NO_RETURN:
            return self.reply(n, error=err)
        if cmd in REBOOT_CMDS_STOP:
            self.halted = self._last_log_line()
            return
        if not _end_caller(n):
            self.reply(n)                       # traced by someone else: the call returns 0

    def _last_log_line(self) -> str:
        with open(os.path.join(self.root, "khofs/dmesg"), "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return lines[-1] if lines else ""

    def sys_fsopen(self, n: Notification) -> None:
        name = read_string(n.pid, n.arg_ulong(0), PATH_MAX)
        if name is not None and name.decode("utf-8", "replace") in MACHINE_FILESYSTEMS:
            return self.reply(n, error=errno.ENOSYS)        # libmount falls back to mount(2)
        self.reply(n, flags=SECCOMP_USER_NOTIF_FLAG_CONTINUE)

    def sys_mount(self, n: Notification) -> None:
        flags = n.arg_ulong(3)
        fstype = read_string(n.pid, n.arg_ulong(2), PATH_MAX) if n.args[2] else None
        inside = MACHINE_FILESYSTEMS.get((fstype or b"").decode("utf-8", "replace"))
        if inside is None or flags & _MS_NOT_A_NEW_MOUNT:
            return self.reply(n, flags=SECCOMP_USER_NOTIF_FLAG_CONTINUE)   # the host's kernel decides
        if not _has_cap(self._caller_status(n), CAP_SYS_ADMIN):
            return self.reply(n, error=errno.EPERM)         # may_mount()
        target = read_string(n.pid, n.arg_ulong(1), PATH_MAX + 1)
        if target is None:
            return self.reply(n, error=errno.EFAULT)
        if len(target) > PATH_MAX - 1:
            return self.reply(n, error=errno.ENAMETOOLONG)
        if not target:
            return self.reply(n, error=errno.ENOENT)
        # The caller's root for an absolute path, its cwd for a relative one.
        base = "root" if target.startswith(b"/") else "cwd"
        self.valid(n)
        try:
            where = os.open(f"{n.pid}/{base}/".encode() + target.lstrip(b"/"),
                            os.O_PATH | os.O_DIRECTORY, dir_fd=self.proc)
        except OSError as e:
            return self.reply(n, error=e.errno or errno.ENOENT)
        try:
            self.valid(n)
            tree = _syscall(_NR_OPEN_TREE, AT_FDCWD, os.path.join(self.root, inside).encode(),
                            OPEN_TREE_CLONE | AT_RECURSIVE)
            try:
                _syscall(_NR_MOVE_MOUNT, tree, b"", where, b"",
                         MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
            finally:
                os.close(tree)
            self.mounts.append(os.readlink(f"self/fd/{where}", dir_fd=self.proc))
        except OSError as e:
            return self.reply(n, error=e.errno or errno.EINVAL)
        finally:
            os.close(where)
        self.reply(n)

    def unmount_all(self) -> None:
        """Undo the binds made for CMD, so the khofs mount can be unmounted behind them."""
        for path in reversed(self.mounts):
            _libc.umount2(path.encode(), MNT_DETACH)
        self.mounts.clear()

    # -- the process tree --

    def descendants(self) -> list[int]:
        """Every process below this one (all of CMD's tree: this process is its subreaper)."""
        parent: dict[int, int] = {}
        for entry in os.listdir(self.proc):
            if entry.isdigit():
                try:
                    stat = _proc_read(self.proc, f"{entry}/stat")
                except OSError:
                    continue
                parent[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
        found, frontier = [], [os.getpid()]
        while frontier:
            pid = frontier.pop()
            kids = [p for p, pp in parent.items() if pp == pid]
            found += kids
            frontier += kids
        return found

    def kill_tree(self) -> None:
        """SIGKILL everything below us until nothing is left (new forks included)."""
        for _ in range(100):
            pids = self.descendants()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _reap(self.child)


def _put(request: dict[str, object], name: str, data: bytes | int | None) -> bytes:
    """One copied-in argument for the control channel: `<name>_len` and its bytes, or
    `<name>_err` for a -errno (None: the copy faulted, EFAULT)."""
    if data is None:
        data = -errno.EFAULT
    if isinstance(data, int):
        request[f"{name}_err"] = -data
        return b""
    request[f"{name}_len"] = len(data)
    return data


def _json_line(request: dict[str, object]) -> bytes:
    import json
    return json.dumps(request).encode() + b"\n"


def _end_caller(n: Notification) -> bool:
    """Make the caller leave its pending call through exit_group(0): its story ends there.

    PTRACE_INTERRUPT breaks the wait for our reply (-ERESTARTSYS); in the trap we make
    the restarted system call exit_group(0).  False if the caller cannot be traced.
    """
    libc_ptrace = _libc.ptrace
    libc_ptrace.restype = ctypes.c_long
    libc_ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if libc_ptrace(PTRACE_SEIZE, n.pid, None, None) < 0:
        return False
    try:
        if libc_ptrace(PTRACE_INTERRUPT, n.pid, None, None) < 0:
            return False
        while True:
            pid, status = os.waitpid(n.pid, 0x40000000)          # __WALL
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                return True
            if os.WIFSTOPPED(status) and status >> 16 == 128:       # PTRACE_EVENT_STOP
                break
            libc_ptrace(PTRACE_CONT, n.pid, None, None)     # a signal stop: drop it, the trap follows
        regs = (ctypes.c_ulong * _NREGS)()
        if libc_ptrace(PTRACE_GETREGS, n.pid, None, ctypes.byref(regs)) < 0:
            return False
        regs[_REG_ORIG_RAX] = _NR_EXIT_GROUP[n.arch]
        regs[_REG_RBX if n.arch == AUDIT_ARCH_I386 else _REG_RDI] = 0
        return libc_ptrace(PTRACE_SETREGS, n.pid, None, ctypes.byref(regs)) == 0
    finally:
        libc_ptrace(PTRACE_DETACH, n.pid, None, None)


def _reap(child: int) -> int | None:
    """Collect every dead child (orphans come to us); CMD's wait status if CMD was one."""
    status = None
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == child:
            status = st


# -- the launcher and its loop --

def _child(sock: socket.socket, command: list[str], clone_bin: str, private_net: bool,
           use_filter: bool) -> None:
    """In the forked child: the filter, the listener to the parent, then exec CMD (never returns)."""
    try:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))
        _check(_libc.prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0))     # the second wall
        env = dict(os.environ)
        try:
            if not use_filter:
                raise Unavailable("")
            listener = install_filter()
        except Unavailable as e:
            sock.sendall(b"E" + str(e).encode())
            if use_filter:              # else `khofs run` put the clone in PATH already
                env["PATH"] = f"{clone_bin}:{env.get('PATH', '')}"
        else:
            socket.send_fds(sock, [b"L"], [listener])
            os.close(listener)          # only the supervisor may hold it
            if private_net:
                _check(_libc.unshare(CLONE_NEWNET))
                _loopback_up()
        sock.close()
        os.execvpe(command[0], command, env)
    except OSError as e:
        print(f"khofs: cannot run {command[0]}: {e.strerror}", file=sys.stderr, flush=True)
    os._exit(127)


FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def forward_signals(pid: int) -> dict[int, object]:
    """Pass SIGTERM, SIGINT and SIGHUP on to pid instead of dying of them, so that CMD decides
    when the machine under it goes away; the handlers replaced."""
    def forward(sig: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):       # it has just exited
            os.kill(pid, sig)
    return {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}


def run(root: str, command: list[str], clone_bin: str, private_net: bool, use_filter: bool = True) -> int:
    """Run CMD under the filter, answer its calls until it exits; its exit status."""
    _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = os.fork()
    if child == 0:
        ours.close()
        _child(theirs, command, clone_bin, private_net, use_filter)
    theirs.close()
    forward_signals(child)
    msg, fds, _, _ = socket.recv_fds(ours, 4096, 1)
    ours.close()
    if not fds:
        if msg[1:]:                             # why the filter failed (not: --no-filter)
            print(UNAVAILABLE_WARNING.format(msg[1:].decode()), file=sys.stderr, flush=True)
        _, status = os.waitpid(child, 0)
        return os.waitstatus_to_exitcode(status)
    sup = Supervisor(fds[0], root, child)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    status: int | None = None
    try:
        poller = select.poll()
        poller.register(sup.listener, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        while status is None and not sup.halted:
            for fd, _events in poller.poll(1000):
                if fd == wake_r:
                    os.read(wake_r, 4096)
                else:
                    n = sup.recv()
                    if n is not None:
                        sup.handle(n)
            status = _reap(child)
        if sup.halted:
            sup.kill_tree()
            print(f"khofs: the machine stopped: {sup.halted}", file=sys.stderr, flush=True)
            status = 0
        sup.unmount_all()
    except BaseException as e:                  # noqa: BLE001 - a failed supervisor must not leave CMD running
        try:
            sup.kill_tree()
        finally:
            os.close(sup.listener)              # whatever is left gets ENOSYS, never the host
            sup.unmount_all()
            print(f"khofs: seccomp supervisor failed, CMD killed: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
        return 1
    return os.waitstatus_to_exitcode(status)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m khofs.intercept", description="khofs run's supervisor")
    p.add_argument("root", help="the khofs mount whose control channel answers the calls")
    p.add_argument("--clone-bin", required=True, help="PATH entry of the kexec clone (the fallback)")
    p.add_argument("--private-net", action="store_true", help="CMD in a new network namespace")
    p.add_argument("--no-filter", action="store_true", help="no interception (it is unavailable)")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return run(args.root, command, args.clone_bin, args.private_net, not args.no_filter)


if __name__ == "__main__":
    sys.exit(main())
