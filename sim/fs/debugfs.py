"""fs/debugfs: a model of the debugfs tree the simulated kernel registers into.

The kernel creates directories, attributes, seq_files and blobs with the
debugfs_create_* calls of fs/debugfs; the FUSE layer only serves this tree.
Paths are relative to the debugfs root ("kho/out/finalize"); errors are
OSError with the errno the real file system returns.
"""

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from sim.lib.kstrtox import kstrtoull


def _err(code: int, path: str = "") -> OSError:
    return OSError(code, os.strerror(code), path) if path else OSError(code, os.strerror(code))


@dataclass
class Dentry:
    """One debugfs node; directories keep their children in creation order."""

    name: str
    mode: int                      # permission bits only; the type comes from the kind
    parent: "Dentry | None" = None
    children: dict[str, "Dentry"] = field(default_factory=dict)

    is_dir: bool = False

    def read(self) -> bytes:
        raise _err(errno.EINVAL)        # no ->read in the file_operations

    def write(self, data: bytes) -> int:
        raise _err(errno.EINVAL)        # vfs_write without FMODE_CAN_WRITE


@dataclass
class Blob(Dentry):
    """debugfs_create_blob: a pointer and a size captured when the file is created."""

    reader: Callable[[], bytes] = lambda: b""

    def read(self) -> bytes:
        return self.reader()


@dataclass
class SeqFile(Dentry):
    """A read-only seq_file whose text is produced at open time."""

    show: Callable[[], str] = lambda: ""

    def read(self) -> bytes:
        return self.show().encode()


@dataclass
class Attribute(Dentry):
    """DEFINE_DEBUGFS_ATTRIBUTE(get, set, "%llu\\n"), written through simple_attr_write."""

    get: Callable[[], int] = lambda: 0
    set: Callable[[int], None] | None = None

    def read(self) -> bytes:
        return b"%d\n" % self.get()

    def write(self, data: bytes) -> int:
        if self.set is None:
            raise _err(errno.EACCES)
        # simple_attr_write copies at most 23 bytes into a NUL-terminated buffer.
        text = data[:23].split(b"\0", 1)[0].decode("latin-1")
        self.set(kstrtoull(text, 0))
        return len(data)


@dataclass
class DebugfsStat:
    """The fields of os.stat_result a debugfs inode fills in."""

    st_mode: int
    st_size: int = 0
    st_uid: int = 0
    st_gid: int = 0
    st_nlink: int = 1


class Debugfs:
    """The tree under /sys/kernel/debug (root directory mode 0700, as on Linux)."""

    def __init__(self) -> None:
        self.root = Dentry("", 0o700, is_dir=True)

    # -- the kernel side (fs/debugfs/inode.c, file.c) --

    def _add(self, dentry: Dentry, parent: Dentry | None) -> Dentry:
        parent = parent or self.root
        if dentry.name in parent.children:
            raise _err(errno.EEXIST)
        dentry.parent = parent
        parent.children[dentry.name] = dentry
        return dentry

    def debugfs_create_dir(self, name: str, parent: Dentry | None = None) -> Dentry:
        return self._add(Dentry(name, 0o755, is_dir=True), parent)

    def debugfs_create_blob(self, name: str, mode: int, parent: Dentry | None,
                            reader: Callable[[], bytes]) -> Dentry:
        return self._add(Blob(name, mode, reader=reader), parent)

    def debugfs_create_seq(self, name: str, mode: int, parent: Dentry | None,
                           show: Callable[[], str]) -> Dentry:
        return self._add(SeqFile(name, mode, show=show), parent)

    def debugfs_create_attr(self, name: str, mode: int, parent: Dentry | None,
                            get: Callable[[], int], set: Callable[[int], None] | None) -> Dentry:
        return self._add(Attribute(name, mode, get=get, set=set), parent)

    def debugfs_remove(self, dentry: Dentry) -> None:
        """Remove a file or a whole directory tree (debugfs_remove is recursive)."""
        if dentry.parent is not None and dentry.parent.children.get(dentry.name) is dentry:
            del dentry.parent.children[dentry.name]
            dentry.parent = None

    # -- the user side: what a process sees through the mount --

    def lookup(self, path: str) -> Dentry:
        node = self.root
        for part in [p for p in path.split("/") if p and p != "."]:
            if not node.is_dir:
                raise _err(errno.ENOTDIR, path)
            if part == "..":
                node = node.parent or node
                continue
            child = node.children.get(part)
            if child is None:
                raise _err(errno.ENOENT, path)
            node = child
        return node

    def exists(self, path: str) -> bool:
        try:
            self.lookup(path)
        except OSError:
            return False
        return True

    def stat(self, path: str) -> DebugfsStat:
        node = self.lookup(path)
        if node.is_dir:
            subdirs = sum(1 for c in node.children.values() if c.is_dir)
            return DebugfsStat(stat.S_IFDIR | node.mode, st_nlink=2 + subdirs)
        return DebugfsStat(stat.S_IFREG | node.mode)

    def listdir(self, path: str) -> list[str]:
        node = self.lookup(path)
        if not node.is_dir:
            raise _err(errno.ENOTDIR, path)
        return list(node.children)

    def read(self, path: str) -> bytes:
        node = self.lookup(path)
        if node.is_dir:
            raise _err(errno.EISDIR, path)
        return node.read()

    def write(self, path: str, data: bytes) -> int:
        node = self.lookup(path)
        if node.is_dir:
            raise _err(errno.EISDIR, path)
        return node.write(data)
