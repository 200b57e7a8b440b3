"""The FUSE adapter: one simulated machine's kernel files as a real file system.

The tree mirrors the paths a KHO workflow touches on a real box, so that
`mount --bind` can put each piece where user space expects it:

    sys/kernel/debug/...          the running kernel's debugfs (sim.fs.debugfs model)
    sys/kernel/kexec_loaded       "%d\\n" (sysfs, 0444)
    sys/kernel/kexec_crash_loaded "%d\\n" (sysfs, 0444)
    proc/cmdline, proc/iomem      procfs text files
    proc/sys/kernel/arch          the architecture (x86_64, aarch64)
    sys/firmware/fdt, sys/firmware/devicetree/base/..., proc/device-tree -> (arm64) the device tree
    dev/mem                       physical memory, offset = physical address
    khofs/syscall                 the control channel the `kexec` command calls through
    khofs/dmesg                   the kernel log as dmesg prints it
    khofs/kmsg                    the log as /dev/kmsg gives it after the last clear (the dmesg shim's)

Everything here is translation: path to node, model errno to FUSE errno.  Kernel
behaviour (what a write to `finalize` does, which errno it returns) lives in sim/.
"""

import ctypes
import errno
import functools
import grp
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import mfusepy

from sim.fs.debugfs import Blob, Debugfs, Dentry
from sim.kernel.kexec_file import kernel_read_file_size
from sim.kernel.reboot import sys_reboot
from sim.physmem import PhysMem

DEBUGFS_ROOT = "/sys/kernel/debug"
SYSCALL_PATH = "/khofs/syscall"
CALL_LINE_MAX = 64 << 10               # a request line longer than this is malformed
DMESG_PATH = "/khofs/dmesg"
KMSG_PATH = "/khofs/kmsg"
# The KHO sanitizer's findings, one line each, all generations; only on a machine that has one.
SANITIZER_PATH = "/khofs/kho_sanitizer"
DEV_MEM = "/dev/mem"

# Directories outside debugfs and what they hold, in `ls -f` order.
_DIRS: dict[str, list[str]] = {
    "/": ["sys", "proc", "dev", "khofs"],
    "/sys": ["kernel"],
    "/sys/kernel": ["debug", "kexec_loaded", "kexec_crash_loaded"],
    "/proc": ["cmdline", "iomem", "uptime"],
    "/dev": ["mem"],
    "/khofs": ["syscall", "dmesg", "kmsg", "kho_sanitizer"],
}

# Fixed files and their permission bits on Linux (/dev/mem is crw-r----- root:kmem there).
_FILE_MODES: dict[str, int] = {
    "/sys/kernel/kexec_loaded": 0o444,
    "/sys/kernel/kexec_crash_loaded": 0o444,
    "/proc/cmdline": 0o444,
    "/proc/iomem": 0o444,
    "/proc/uptime": 0o444,
    DEV_MEM: 0o640,
    SYSCALL_PATH: 0o600,
    DMESG_PATH: 0o444,
    KMSG_PATH: 0o444,
    SANITIZER_PATH: 0o444,
}
_SYSFS_FILES = ("/sys/kernel/kexec_loaded", "/sys/kernel/kexec_crash_loaded")
_PROC_FILES = ("/proc/cmdline", "/proc/iomem", "/proc/uptime")

_ACCMODE_WRITES = (0o1, 0o2)         # O_WRONLY, O_RDWR


class KernelLike(Protocol):
    """What the adapter needs from sim.init.main.Kernel."""

    debugfs: Debugfs
    cmdline: str
    kexec_loaded: bool
    kexec_crash_loaded: bool
    panic_message: str | None

    def iomem(self) -> str: ...
    def dmesg(self) -> str: ...
    def devkmsg(self) -> str: ...
    def syslog(self, action: int) -> None: ...
    def uptime(self) -> str: ...
    def kexec_file_load(self, kernel: bytes | int, initrd: bytes | int | None, cmdline: str | bytes | int,
                        flags: int = 0) -> None: ...
    def platform_files(self) -> dict[str, tuple[int, bytes]]: ...
    def platform_links(self) -> dict[str, str]: ...


@dataclass
class _Platform:
    """One kernel's platform files, and the directories and links they make."""

    files: dict[str, tuple[int, bytes]]
    links: dict[str, str]
    dirs: dict[str, list[str]] = field(default_factory=dict)
    # st_nlink of the directories outside debugfs, counted on a directory's first getattr: a lookup
    # walks every component of a path, and each walk would count them again.
    nlink: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for path in [*self.files, *self.links]:
            parent, _, name = path.rpartition("/")
            while True:
                children = self.dirs.setdefault(parent or "/", [])
                if name in children:
                    break
                children.append(name)
                if not parent:
                    break
                parent, _, name = parent.rpartition("/")


class MachineLike(Protocol):
    """What the adapter needs from sim.machine.Machine."""

    physmem: PhysMem
    kho_sanitizer: Any          # sim.kho_sanitizer.KhoSanitizer | None: its `log` is served

    halted: bool

    @property
    def kernel(self) -> Any: ...
    def kexec(self) -> Any: ...
    def boot(self) -> Any: ...


@dataclass
class _Handle:
    """Per-open state: what a file descriptor remembers between read/write calls."""

    path: str
    dentry: Dentry | None = None       # the debugfs node this fd was opened on
    content: bytes | None = None       # snapshot served to this reader (no torn blobs)
    request: bytearray = field(default_factory=bytearray)   # control channel: the call
    reply: bytes | None = None                              # control channel: its result
    reply_pos: int = 0              # the reply is read sequentially, whatever the file position
    call: dict[str, Any] | None = None   # control channel: the request line, checked once complete
    payload_end: int = 0            # ... and where its payload ends in `request`
    dropping: bool = False          # ... and whether bytes past that are swallowed


def _gid(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return 0


_worker = threading.local()       # per libfuse worker thread, once its thread state is kept


def _keep_thread_state() -> None:
    """Keep the Python thread state of the libfuse worker thread calling us, for good.

    ctypes runs each FUSE callback under PyGILState_Ensure/Release, which on a thread Python did
    not start creates a thread state (and maps its frame stack) and destroys it again: per
    request, the largest cost of a `cat` after the kernel's.  One more Ensure, never released,
    keeps the count above zero, so every later callback on this thread only takes the GIL.
    """
    if not getattr(_worker, "kept", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _worker.kept = True


F = TypeVar("F", bound=Callable[..., Any])


def _syscall(func: F) -> F:
    """Serialise on the machine lock and turn every failure into an errno.

    Model errors carry the kernel's errno and pass through unchanged.  Anything
    else is a simulator bug: the caller gets EIO, the daemon's stderr one line,
    and the mount stays up.
    """

    @functools.wraps(func)
    def wrapper(self: "KhoFs", *args: Any) -> Any:
        _keep_thread_state()
        try:
            with self._lock:
                return func(self, *args)
        except OSError as e:
            if isinstance(e.errno, int) and e.errno > 0:
                raise mfusepy.FuseOSError(e.errno) from None
            self._log(f"{func.__name__}({args[0]!r}): {type(e).__name__}: {e}")
            raise mfusepy.FuseOSError(errno.EIO) from None
        except Exception as e:          # noqa: BLE001 - the mount must survive any input
            self._log(f"{func.__name__}({args[0]!r}): {type(e).__name__}: {e}")
            raise mfusepy.FuseOSError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def _err(code: int) -> mfusepy.FuseOSError:
    return mfusepy.FuseOSError(code)


class KhoFs(mfusepy.Operations):
    """Serves one machine's kernel files; always the kernel running now, so a kexec swaps the tree."""

    use_ns = True

    def __init__(self, machine: MachineLike) -> None:
        self._machine = machine
        self._lock = threading.RLock()
        self._handles: dict[int, _Handle] = {}
        self._next_fh = 1
        self._mount_time_ns = time.time_ns()
        self._kmem_gid = _gid("kmem")
        self._platform_of: tuple[Any, _Platform] | None = None
        self._told_panic: object = None     # the stopped kernel the daemon's log already named
        # chmod/chown results, as simple_setattr keeps them in the inode, by path; the debugfs
        # ones belong to one kernel's tree (a kexec'd kernel starts with its own modes).
        self._attrs: dict[str, dict[str, int]] = {}
        self._attrs_debugfs: Debugfs | None = None

    # -- helpers --

    @staticmethod
    def _log(text: str) -> None:
        print(f"khofs: {text}", file=sys.stderr, flush=True)

    @property
    def _kernel(self) -> KernelLike:
        """The running kernel; a kernel that panicked serves nothing: EIO, and one line on stderr."""
        k = self._machine.kernel
        if k.panic_message is not None:
            if self._told_panic is not k:
                self._told_panic = k
                self._log(f"the kernel panicked: {k.panic_message}; its files fail with EIO "
                          "(khofs/dmesg still shows its log)")
            raise _err(errno.EIO)
        return k

    @staticmethod
    def _debugfs_path(path: str) -> str | None:
        if path == DEBUGFS_ROOT:
            return ""
        if path.startswith(DEBUGFS_ROOT + "/"):
            return path[len(DEBUGFS_ROOT) + 1:]
        return None

    def _stat(self, mode: int, nlink: int = 1, gid: int = 0) -> dict[str, int]:
        t = self._mount_time_ns
        return {"st_mode": mode, "st_nlink": nlink, "st_uid": 0, "st_gid": gid, "st_size": 0,
                "st_atime": t, "st_mtime": t, "st_ctime": t}

    def _text(self, path: str) -> bytes:
        """Contents of a fixed text file, produced when a reader starts at offset 0."""
        if path == DMESG_PATH:              # the console: readable even after a panic
            return self._machine.kernel.dmesg().encode("utf-8", "surrogateescape")
        k = self._kernel
        if path == "/sys/kernel/kexec_loaded":
            return b"%d\n" % int(k.kexec_loaded)
        if path == "/sys/kernel/kexec_crash_loaded":
            return b"%d\n" % int(k.kexec_crash_loaded)
        if path == "/proc/cmdline":
            return k.cmdline.encode("utf-8", "surrogateescape") + b"\n"
        if path == "/proc/iomem":
            return k.iomem().encode()
        if path == "/proc/uptime":
            return k.uptime().encode()
        if path == KMSG_PATH:
            return k.devkmsg().encode()
        if path == SANITIZER_PATH and self._machine.kho_sanitizer is not None:
            return "".join(line + "\n" for line in self._machine.kho_sanitizer.log).encode()
        raise _err(errno.ENOENT)

    @property
    def _platform(self) -> _Platform:
        """The running kernel's platform files (built once per kernel; none once it panicked)."""
        k = self._machine.kernel
        if k.panic_message is not None:
            return _Platform({}, {})
        if self._platform_of is None or self._platform_of[0] is not k:
            self._platform_of = (k, _Platform(k.platform_files(), k.platform_links()))
        return self._platform_of[1]

    def _children(self, path: str) -> list[str]:
        """Entries of a directory outside debugfs, fixed ones first; KeyError if it is none."""
        extra = self._platform.dirs.get(path)
        if path not in _DIRS and extra is None:
            raise KeyError(path)
        fixed = [name for name in _DIRS.get(path, []) if not self._absent(f"{path.rstrip('/')}/{name}")]
        return fixed + [name for name in extra or [] if name not in fixed]

    def _absent(self, path: str) -> bool:
        """The sanitizer's file exists only on a machine with a sanitizer."""
        return path == SANITIZER_PATH and self._machine.kho_sanitizer is None

    def _live_dentry(self, handle: _Handle) -> Dentry:
        """debugfs returns EIO on an fd whose file was removed (or whose kernel is gone)."""
        rel = self._debugfs_path(handle.path)
        assert rel is not None and handle.dentry is not None
        try:
            if self._kernel.debugfs.lookup(rel) is handle.dentry:
                return handle.dentry
        except OSError:
            pass
        raise _err(errno.EIO)

    # -- namespace --

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = self._getattr(path)
        st.update(self._inode_attrs(path, create=False))
        return st

    def _getattr(self, path: str) -> dict[str, Any]:
        rel = self._debugfs_path(path)
        if rel is not None:
            st = self._kernel.debugfs.stat(rel)
            return self._stat(st.st_mode, st.st_nlink, st.st_gid)
        platform = self._platform
        if path in _DIRS or path in platform.dirs:
            nlink = platform.nlink.get(path)
            if nlink is None:
                children = [f"{path.rstrip('/')}/{name}" for name in self._children(path)]
                nlink = platform.nlink[path] = 2 + sum(
                    1 for child in children
                    if child in _DIRS or child in platform.dirs or child == DEBUGFS_ROOT)
            return self._stat(stat.S_IFDIR | 0o755, nlink)
        if path in platform.files:
            mode, content = platform.files[path]
            return {**self._stat(stat.S_IFREG | mode), "st_size": len(content)}
        if path in platform.links:
            return {**self._stat(stat.S_IFLNK | 0o777), "st_size": len(platform.links[path])}
        if path in _FILE_MODES and not self._absent(path):
            gid = self._kmem_gid if path == DEV_MEM else 0
            return self._stat(stat.S_IFREG | _FILE_MODES[path], gid=gid)
        raise _err(errno.ENOENT)

    def _inode_attrs(self, path: str, create: bool = True) -> dict[str, int]:
        if self._debugfs_path(path) is not None and self._attrs_debugfs is not self._kernel.debugfs:
            self._attrs = {p: a for p, a in self._attrs.items() if self._debugfs_path(p) is None}
            self._attrs_debugfs = self._kernel.debugfs
        return self._attrs.setdefault(path, {}) if create else self._attrs.get(path, {})

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def chmod(self, path: str, mode: int) -> int:
        """debugfs, sysfs and procfs files take a new mode from root (simple_setattr)."""
        st = self.getattr(path)
        self._inode_attrs(path)["st_mode"] = stat.S_IFMT(st["st_mode"]) | mode & 0o7777
        return 0

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def chown(self, path: str, uid: int, gid: int) -> int:
        self.getattr(path)
        attrs = self._inode_attrs(path)
        for key, value in (("st_uid", uid), ("st_gid", gid)):
            if value not in (-1, 0xFFFFFFFF):       # -1: leave it as it is
                attrs[key] = value
        return 0

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def readdir(self, path: str, fh: int) -> list[str]:
        rel = self._debugfs_path(path)
        if rel is not None:
            return [".", "..", *self._kernel.debugfs.listdir(rel)]
        try:
            return [".", "..", *self._children(path)]
        except KeyError:
            pass
        platform = self._platform
        raise _err(errno.ENOTDIR if path in _FILE_MODES or path in platform.files else errno.ENOENT)

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def readlink(self, path: str) -> str:
        target = self._platform.links.get(path)
        if target is None:
            raise _err(errno.EINVAL if self._exists(path) else errno.ENOENT)
        return target

    def _exists(self, path: str) -> bool:
        try:
            self.getattr(path)
        except mfusepy.FuseOSError:
            return False
        return True

    # -- files --

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def open(self, path: str, flags: int) -> int:
        handle = _Handle(path)
        writing = (flags & 0o3) in _ACCMODE_WRITES
        rel = self._debugfs_path(path)
        if rel is not None:
            handle.dentry = self._kernel.debugfs.lookup(rel)
            if handle.dentry.is_dir:
                raise _err(errno.EISDIR)
            if isinstance(handle.dentry, Blob):
                handle.content = handle.dentry.read()
        elif path in _SYSFS_FILES:
            if writing:                 # kernfs_fop_open: no ->write, no write access
                raise _err(errno.EACCES)
        elif path in self._platform.files:
            if writing:                 # read-only sysfs and sysctl files
                raise _err(errno.EACCES)
            handle.content = self._platform.files[path][1]
        elif path == SYSCALL_PATH and flags & 0o3 != 0o2:
            raise _err(errno.EINVAL)            # a call needs its reply read back: O_RDWR only
        elif path not in _FILE_MODES or self._absent(path):
            raise _err(errno.EISDIR if path in _DIRS or path in self._platform.dirs else errno.ENOENT)
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    def _handle(self, fh: int) -> _Handle:
        handle = self._handles.get(fh)
        if handle is None:
            raise _err(errno.EBADF)
        return handle

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        handle = self._handle(fh)
        if handle.path == DEV_MEM:
            return self._read_mem(size, offset)
        if handle.path == SYSCALL_PATH:
            if handle.reply is None:
                handle.reply = self._call(handle)
            chunk = handle.reply[handle.reply_pos:handle.reply_pos + size]
            handle.reply_pos += len(chunk)
            return chunk
        if handle.dentry is not None:
            dentry = self._live_dentry(handle)
            if handle.content is None or (offset == 0 and not isinstance(dentry, Blob)):
                handle.content = dentry.read()
        elif handle.content is None or (offset == 0 and handle.path not in self._platform.files):
            handle.content = self._text(handle.path)
        return handle.content[offset:offset + size]

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        handle = self._handle(fh)
        if handle.path == DEV_MEM:
            self._check_mem(offset, len(data))
            self._machine.physmem.write(offset, data)
            return len(data)
        if handle.path == SYSCALL_PATH:
            return self._write_call(handle, data, offset)
        if handle.dentry is not None:
            return self._live_dentry(handle).write(data)
        if handle.path in _PROC_FILES:
            raise _err(errno.EIO)               # pde_write: no ->proc_write
        raise _err(errno.EINVAL)                # khofs/dmesg: no ->write

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        """O_TRUNC arrives here on libfuse2: a no-op, as for every kernel pseudo-file."""
        rel = self._debugfs_path(path)
        if rel is not None:
            if self._kernel.debugfs.stat(rel).st_mode & stat.S_IFDIR:
                raise _err(errno.EISDIR)
            return 0
        if path in _SYSFS_FILES or path in self._platform.files:
            raise _err(errno.EACCES)
        if path in _FILE_MODES and not self._absent(path):
            return 0
        raise _err(errno.EISDIR if path in _DIRS else errno.ENOENT)

    # No flush: the kernel's first FLUSH gets ENOSYS, after which it sends none and close() returns
    # 0, as on debugfs; a callback per close() was most of what `cat` cost beyond the reference.

    @mfusepy.overrides(mfusepy.Operations)
    def release(self, path: str, fh: int) -> int:
        """Unlocked: one dict pop is atomic, and nothing else here can fail."""
        _keep_thread_state()
        self._handles.pop(fh, None)
        return 0

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        """`touch` on an existing file succeeds (simple_setattr) and changes nothing we track."""
        self.getattr(path)                      # ENOENT for a missing path
        return 0

    # -- what kernel pseudo-file systems refuse --

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        raise _err(errno.EACCES)                # lookup_open: no ->create

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def mkdir(self, path: str, mode: int) -> int:
        raise _err(errno.EPERM)                 # vfs_mkdir: no ->mkdir

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def mknod(self, path: str, mode: int, dev: int) -> int:
        raise _err(errno.EPERM)

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def unlink(self, path: str) -> int:
        raise _err(errno.EPERM)

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def rmdir(self, path: str) -> int:
        raise _err(errno.EPERM)

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def rename(self, old: str, new: str) -> int:
        raise _err(errno.EPERM)

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def symlink(self, target: str, source: str) -> int:
        raise _err(errno.EPERM)

    @mfusepy.overrides(mfusepy.Operations)
    @_syscall
    def link(self, target: str, source: str) -> int:
        raise _err(errno.EPERM)

    # -- /dev/mem --

    def _check_mem(self, phys: int, count: int) -> None:
        """valid_phys_addr_range(): [phys, phys+count) must end at or below high_memory."""
        if phys + count > self._machine.physmem.size:
            raise _err(errno.EFAULT)

    def _read_mem(self, size: int, offset: int) -> bytes:
        self._check_mem(offset, size)
        return self._machine.physmem.read(offset, size)

    # -- the control channel --

    def _write_call(self, handle: _Handle, data: bytes, offset: int) -> int:
        """Buffer a request, checking its JSON line as soon as it is complete: a bad line is
        answered then, a file the kernel refuses by its size alone is never buffered, and what
        the call will not read is swallowed (the reply is read back as usual)."""
        if handle.reply is not None:
            if handle.call is None:             # already answered: swallow the rest
                return len(data)
            raise _err(errno.EINVAL)            # one call per open
        end = offset + len(data)
        if handle.call is not None and end > handle.payload_end:
            if not handle.dropping:
                return self._refuse(handle, errno.EINVAL, end - offset)   # more than declared
            data = data[:max(0, handle.payload_end - offset)]
        handle.request[offset:offset + len(data)] = data
        if handle.call is None:
            head, sep, _ = handle.request.partition(b"\n")
            if not sep and len(head) <= CALL_LINE_MAX:
                return end - offset
            try:
                checked = self._check_call(bytes(head) if sep else b"")
            except OSError as e:
                return self._refuse(handle, e.errno or errno.EINVAL, end - offset)
            handle.call, handle.payload_end, handle.dropping = checked
            if len(handle.request) > handle.payload_end:
                if not handle.dropping:
                    return self._refuse(handle, errno.EINVAL, end - offset)
                del handle.request[handle.payload_end:]
        return end - offset

    @staticmethod
    def _refuse(handle: _Handle, err: int, written: int) -> int:
        handle.call, handle.request, handle.reply = None, bytearray(), b"-%d\n" % err
        return written

    def _check_call(self, head: bytes) -> tuple[dict[str, Any], int, bool]:
        """The request line as a dict, where its payload ends, and whether bytes past that are
        dropped; OSError for a malformed line.  kernel_read_file()'s size checks run here: a
        file it refuses becomes `<name>_err`, and neither it nor what the kernel would read
        after it (the initrd, a cmdline by length) is buffered."""
        try:
            call = json.loads(head)
        except (ValueError, RecursionError):
            call = None
        if not isinstance(call, dict) or not isinstance(call.get("call"), str):
            raise OSError(errno.EINVAL, "malformed request")
        for key, value in call.items():
            if key.endswith("_len") and value is not None and (
                    not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise OSError(errno.EINVAL, f"malformed {key}")
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise OSError(errno.EINVAL, f"unencodable {key}") from None
        start = len(head) + 1
        if call["call"] == "kexec_file_load":
            kept = 0
            for name, later in (("kernel", ("initrd", "cmdline")), ("initrd", ("cmdline",))):
                size = call.get(f"{name}_len") or 0
                err = kernel_read_file_size(size, self._machine.physmem.size) if size else 0
                if err:
                    del call[f"{name}_len"]
                    call[f"{name}_err"] = -err
                    for other in later:
                        if call.pop(f"{other}_len", None) is not None and other == "cmdline":
                            call["cmdline"] = ""
                    return call, start + kept, True
                kept += size
        lengths = sum(v for k, v in call.items() if k.endswith("_len") and isinstance(v, int))
        return call, start + lengths, False

    def _call(self, handle: _Handle) -> bytes:
        """Run one "system call" and return its result as `0\\n` or `-errno\\n`."""
        try:
            if handle.call is None:             # the request line never ended
                raise OSError(errno.EINVAL, "malformed request")
            self._dispatch(handle.call, bytes(handle.request).partition(b"\n")[2])
        except OSError as e:
            if not (isinstance(e.errno, int) and e.errno > 0):
                raise
            return b"-%d\n" % e.errno
        return b"0\n"

    def _dispatch(self, call: dict[str, Any], payload: bytes) -> None:
        name = call["call"]
        if name == "kexec_file_load":
            flags = call.get("flags", 0)
            if not isinstance(flags, int):
                raise OSError(errno.EINVAL, "malformed kexec_file_load request")
            parts = _Payload(payload)
            kernel = parts.take(call, "kernel")
            initrd = parts.take(call, "initrd", optional=True)
            cmdline = call["cmdline"] if isinstance(call.get("cmdline"), str) else parts.take(call, "cmdline")
            if kernel is None or parts.rest:
                raise OSError(errno.EINVAL, "malformed kexec_file_load request")
            self._kernel.kexec_file_load(kernel, initrd, cmdline, flags)
        elif name == "syslog":
            if not isinstance(call.get("type"), int):
                raise OSError(errno.EINVAL, "malformed syslog request")
            self._kernel.syslog(call["type"])
        elif name == "reboot":
            args = [call.get(key) for key in ("magic1", "magic2", "cmd")]
            if not all(isinstance(a, int) for a in args):
                raise OSError(errno.EINVAL, "malformed reboot request")
            arg = _Payload(payload).take(call, "arg", optional=True)
            sys_reboot(self._machine, *args, arg)   # type: ignore[arg-type]
        else:                                   # kexec_load included: the kernel has no such call
            raise OSError(errno.ENOSYS, name)


class _Payload:
    """The raw bytes after a request's JSON line, handed out in order by `<name>_len` fields.

    `<name>_err: E` instead of a length stands for a copy from user space that
    failed with errno E; the simulated call fails with -E where Linux copies it.
    """

    def __init__(self, payload: bytes) -> None:
        self.rest = payload

    def take(self, call: dict[str, Any], name: str, optional: bool = False) -> bytes | int | None:
        err, size = call.get(f"{name}_err"), call.get(f"{name}_len")
        if isinstance(err, int) and not isinstance(err, bool) and err > 0 and size is None:
            return -err
        if size is None and optional:
            return None
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(self.rest):
            raise OSError(errno.EINVAL, f"malformed {name}")
        part, self.rest = self.rest[:size], self.rest[size:]
        return part


def serve(machine: MachineLike, mountpoint: str, **fuse_options: Any) -> None:
    """Mount and serve until unmounted (blocks); the options every debugfs-like file needs.

    direct_io: files report st_size 0, as on debugfs, yet `cat` must see their bytes;
    zero timeouts: `out/fdt` appears and disappears with finalize/abort, and the next
    `[ -e ]` must see it at once.  Unprivileged users may read what Linux lets them read.
    """
    options: dict[str, Any] = {"foreground": True, "direct_io": True, "entry_timeout": 0,
                               "attr_timeout": 0, "negative_timeout": 0, "fsname": "khofs"}
    if os.geteuid() == 0:
        # Every user sees the files, and the kernel checks each access against the modes
        # above (root-only debugfs, dev/mem, control channel), as on Linux.
        options.update(allow_other=True, default_permissions=True)
    if mfusepy.fuse_version_major == 3:
        # libfuse 3.14 defaults max_idle_threads to UINT_MAX and then complains about it on
        # stderr ("Ignoring invalid max threads value"); 10 is libfuse3's documented default.
        options["max_idle_threads"] = 10
    options.update(fuse_options)
    _Fuse(KhoFs(machine), mountpoint, **options)


class _Fuse(mfusepy.FUSE):
    """mfusepy's FUSE, its struct stat packed once per distinct attribute set.

    A `cat` is mostly lookups, each a getattr whose dict mfusepy copies field by field into
    the struct (three timespecs among them); the same few dicts come back again and again,
    so their packed bytes are kept and copied whole.  getattr still runs every time, so
    files appear and vanish (and errnos come back) exactly as before.
    """

    _STAT_CACHE_MAX = 4096      # distinct attribute sets kept; more means sizes keep changing

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._packed: dict[tuple[tuple[str, Any], ...], bytes] = {}
        super().__init__(*args, **kwargs)

    def fgetattr(self, path: bytes | None, buf: Any, fip: Any) -> int:
        if fip:
            return super().fgetattr(path, buf, fip)
        attrs = self.operations.getattr(None if path is None else path.decode(self.encoding, self.errors))
        key = tuple(attrs.items())
        raw = self._packed.get(key)
        if raw is None:
            ctypes.memset(buf, 0, ctypes.sizeof(mfusepy.c_stat))
            mfusepy.set_st_attrs(buf.contents, attrs, use_ns=self.use_ns)
            if len(self._packed) >= self._STAT_CACHE_MAX:
                self._packed.clear()
            raw = self._packed[key] = ctypes.string_at(buf, ctypes.sizeof(mfusepy.c_stat))
        else:
            ctypes.memmove(buf, raw, len(raw))
        return 0
