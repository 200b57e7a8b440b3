"""kernel/kexec_file.c and kexec_core.c: kexec_file_load(), machine_kexec() (Linux 6.16).

Mirrors kernel/kexec_file.c (syscall, kimage_file_prepare_segments,
kexec_image_probe_default over the architecture's kexec_file_loaders, kexec_add_buffer,
kexec_locate_mem_hole and its top-down/bottom-up searches) and the checks of
kernel/kexec_core.c sanity_check_segment_list().  The loaders are the architecture's
(sim/arch/x86/kernel/kexec_bzimage64.py, sim/arch/arm64/kernel/kexec_image.py).  Errors
surface as OSError with the syscall's errno.

The loaded image lives in Python memory of the *old* kernel, as the kernel
keeps it in its own pages until ``reboot(LINUX_REBOOT_CMD_KEXEC)``; only
`machine_kexec` writes it to its destinations in simulated RAM, and the next
kernel gets nothing but that RAM and the two "registers" it returns.

Configuration of the simulated kernel, as far as this file is concerned:
CONFIG_IMA_KEXEC=n, CONFIG_KEXEC_HANDOVER=y, CONFIG_CRASH_DUMP=y with no
``crashkernel=`` reservation.
"""

import errno
import fcntl
import os
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sim.arch.x86.bootparam import (
    COMMAND_LINE_SIZE,
    E820Entry,
)
from sim.kernel.printk import Printk
from sim.physmem import PhysMem
from sim.sizes import PAGE_SIZE, U64_MAX

# include/uapi/linux/kexec.h, include/linux/kexec.h (6.16: KEXEC_FILE_NO_CMA 0x10 is 6.17+).
KEXEC_FILE_UNLOAD = 0x00000001
KEXEC_FILE_ON_CRASH = 0x00000002
KEXEC_FILE_NO_INITRAMFS = 0x00000004
KEXEC_FILE_DEBUG = 0x00000008
KEXEC_FILE_FLAGS = KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS | KEXEC_FILE_DEBUG
KEXEC_SEGMENT_MAX = 16
# x86 leaves the generic value: a kexec_buf whose mem is 0 asks for a search.
KEXEC_BUF_MEM_UNKNOWN = 0
KEXEC_TYPE_DEFAULT = 0
KEXEC_TYPE_CRASH = 1
# kernel_read_file() limit for kernel and initrd (KEXEC_FILE_SIZE_MAX).
KEXEC_FILE_SIZE_MAX = 4 << 30
# kmalloc() refuses more than this (memdup_user of the command line): 1 << (MAX_PAGE_ORDER + PAGE_SHIFT).
KMALLOC_MAX_SIZE = 4 << 20
# x86_64: MAXMEM with 4-level paging (1 << 46); destinations must end below it.
KEXEC_DESTINATION_MEMORY_LIMIT = (1 << 46) - 1


_PR_FILE = "kexec_file: "

if TYPE_CHECKING:
    from sim.arch import Arch, KexecFileOps


def ALIGN(x: int, a: int) -> int:
    """The kernel's mask-based ALIGN() on unsigned long."""
    return ((x + a - 1) & ~(a - 1)) & U64_MAX


def ALIGN_DOWN(x: int, a: int) -> int:
    return (x & ~(a - 1)) & U64_MAX


# -- the running kernel, as this module sees it --

class KhoHooks(Protocol):
    """The two kexec_handover.c helpers kexec_file.c calls."""

    def kho_fill_kimage(self, image: "Kimage") -> int: ...

    def kho_locate_mem_hole(self, kbuf: "KexecBuf", func: Callable[[int, int, "KexecBuf"], int]) -> int: ...


class KexecHost(Protocol):
    """Everything the kexec machinery may use of the kernel it runs in."""

    @property
    def physmem(self) -> PhysMem: ...

    @property
    def printk(self) -> Printk: ...

    @property
    def kho(self) -> KhoHooks: ...

    @property
    def e820_table_kexec(self) -> list[E820Entry]:
        """The firmware map as this kernel received it, for the next kernel's boot params."""
        ...

    @property
    def totalram_pages(self) -> int: ...

    @property
    def arch(self) -> "Arch":
        """The architecture's kexec_file_loaders and machine_kexec."""
        ...

    def kexec_walk_memblock(self) -> list[tuple[int, int]]:
        """memblock's free ranges [start, end), ascending, that kexec_walk_memblock() visits.

        x86 with CONFIG_ARCH_KEEP_MEMBLOCK (the simulated TDX-host config, spec 12.6)
        searches memory minus memblock.reserved rather than the "System RAM" resources.
        """
        ...


@dataclass
class KexecSegment:
    """struct kexec_segment: `buffer` (bufsz bytes) goes to [mem, mem + memsz), the rest zeroed."""

    buffer: bytes
    bufsz: int
    mem: int
    memsz: int


@dataclass
class Kimage:
    """struct kimage of a kexec_file_load()ed image."""

    loader: "Kexec"
    type: int = KEXEC_TYPE_DEFAULT
    file_mode: int = 1
    segments: list[KexecSegment] = field(default_factory=list)
    start: int = 0                    # purgatory entry point
    head: int = 0
    cmdline_buf: bytes = b""
    kho_fdt: int = 0
    kho_scratch: KexecSegment | None = None
    kernel_load_addr: int = 0
    bootparam_load_addr: int = 0
    initrd_load_addr: int = 0
    fops: "KexecFileOps | None" = None
    arch: Any = None                  # struct kimage_arch: what the architecture's loader keeps

    @property
    def nr_segments(self) -> int:
        return len(self.segments)

    @property
    def is_crash(self) -> bool:
        return self.type == KEXEC_TYPE_CRASH


@dataclass
class KexecBuf:
    """struct kexec_buf: what to place and where it may go; `mem` is the result."""

    image: Kimage
    buffer: bytes = b""
    bufsz: int = 0
    mem: int = KEXEC_BUF_MEM_UNKNOWN
    memsz: int = 0
    buf_align: int = 0
    buf_min: int = 0
    buf_max: int = 0
    top_down: bool = False


# -- kexec_core.c / kexec_file.c placement --

def kimage_is_destination_range(image: Kimage, start: int, end: int) -> bool:
    for seg in image.segments:
        mstart = seg.mem
        mend = (mstart + seg.memsz - 1) & U64_MAX
        if end >= mstart and start <= mend:
            return True
    return False


def locate_mem_hole_top_down(start: int, end: int, kbuf: KexecBuf) -> int:
    temp_end = min(end, kbuf.buf_max)
    temp_start = (temp_end - kbuf.memsz + 1) & U64_MAX
    while True:
        temp_start = ALIGN_DOWN(temp_start, kbuf.buf_align)
        if temp_start < start or temp_start < kbuf.buf_min:
            return 0
        temp_end = (temp_start + kbuf.memsz - 1) & U64_MAX
        if kimage_is_destination_range(kbuf.image, temp_start, temp_end):
            temp_start = (temp_start - PAGE_SIZE) & U64_MAX
            continue
        break
    kbuf.mem = temp_start
    return 1


def locate_mem_hole_bottom_up(start: int, end: int, kbuf: KexecBuf) -> int:
    temp_start = max(start, kbuf.buf_min)
    while True:
        temp_start = ALIGN(temp_start, kbuf.buf_align)
        temp_end = (temp_start + kbuf.memsz - 1) & U64_MAX
        if temp_end > end or temp_end > kbuf.buf_max:
            return 0
        if kimage_is_destination_range(kbuf.image, temp_start, temp_end):
            temp_start = (temp_start + PAGE_SIZE) & U64_MAX
            continue
        break
    kbuf.mem = temp_start
    return 1


def locate_mem_hole_callback(start: int, end: int, kbuf: KexecBuf) -> int:
    """Try one resource [start, end] (inclusive); 1 = placed (kbuf.mem set), 0 = try the next."""
    sz = end - start + 1
    if sz < kbuf.memsz:
        return 0
    if end < kbuf.buf_min or start > kbuf.buf_max:
        return 0
    if kbuf.top_down:
        return locate_mem_hole_top_down(start, end, kbuf)
    return locate_mem_hole_bottom_up(start, end, kbuf)


def kexec_add_buffer(kbuf: KexecBuf) -> int:
    """Place kbuf as a new segment of kbuf.image: 0 or -errno (the kernel's global function)."""
    return kbuf.image.loader.kexec_add_buffer(kbuf)


def _hashed_ptr(*key: int) -> str:
    """A %p value: the kernel prints a 32-bit hash, zero-extended to 16 digits."""
    return f"{zlib.crc32(struct.pack(f'<{len(key)}Q', *(k & U64_MAX for k in key))):016x}"


def _oserror(err: int) -> OSError:
    return OSError(err, os.strerror(err))


class Kexec:
    """The kexec_file state of one running kernel: the loaded images and the syscall."""

    def __init__(self, host: KexecHost,
                 get_random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.host = host
        self.get_random_bytes = get_random_bytes
        self.kexec_image: Kimage | None = None
        self.kexec_crash_image: Kimage | None = None
        # No crashkernel= reservation: crashk_res is the empty resource [0, 0].
        self.crashk_res: tuple[int, int] = (0, 0)
        self.kexec_file_dbg_print = False

    @property
    def kexec_loaded(self) -> bool:
        """/sys/kernel/kexec_loaded."""
        return self.kexec_image is not None

    @property
    def kexec_crash_loaded(self) -> bool:
        """/sys/kernel/kexec_crash_loaded."""
        return self.kexec_crash_image is not None

    def kexec_dprintk(self, text: str) -> None:
        """Printed at info level only for KEXEC_FILE_DEBUG (kexec -d); nothing otherwise."""
        if self.kexec_file_dbg_print:
            self.host.printk.pr_info(text)

    # -- placement --

    def kexec_locate_mem_hole(self, kbuf: KexecBuf) -> int:
        if kbuf.mem != KEXEC_BUF_MEM_UNKNOWN:
            return 0
        ret = self.host.kho.kho_locate_mem_hole(kbuf, locate_mem_hole_callback)
        if ret <= 0:
            return ret
        ret = 0
        if kbuf.image.is_crash:
            ret = locate_mem_hole_callback(self.crashk_res[0], self.crashk_res[1], kbuf)
        else:
            ranges = self.host.kexec_walk_memblock()
            for start, end in (reversed(ranges) if kbuf.top_down else ranges):
                if end <= start:
                    continue
                ret = locate_mem_hole_callback(start, end - 1, kbuf)
                if ret:
                    break
        return 0 if ret == 1 else -errno.EADDRNOTAVAIL

    def kexec_add_buffer(self, kbuf: KexecBuf) -> int:
        image = kbuf.image
        if not image.file_mode:
            return -errno.EINVAL
        if image.nr_segments >= KEXEC_SEGMENT_MAX:
            return -errno.EINVAL
        kbuf.memsz = ALIGN(kbuf.memsz, PAGE_SIZE)
        kbuf.buf_align = max(kbuf.buf_align, PAGE_SIZE)
        ret = self.kexec_locate_mem_hole(kbuf)
        if ret:
            return ret
        image.segments.append(KexecSegment(bytes(kbuf.buffer), kbuf.bufsz, kbuf.mem, kbuf.memsz))
        return 0

    # -- the system call --

    def kexec_file_load(self, kernel: bytes | int, initrd: bytes | int | None, cmdline: str | bytes | int,
                        flags: int) -> None:
        """SYSCALL kexec_file_load: raise OSError(errno) where the syscall returns -errno.

        `initrd` None stands for initrd_fd -1.  A str `cmdline` is passed as
        kexec-tools does (its bytes plus a NUL; "" means cmdline_len 0); bytes
        are passed verbatim, so the trailing-NUL rule can be exercised.  An int
        in place of a file or the command line is the -errno its copy from user
        space failed with (kernel_read_file_from_fd(), memdup_user()): the call
        fails with it where the kernel would copy it, after the checks before.
        """
        is_crash = bool(flags & KEXEC_FILE_ON_CRASH)
        # kexec_load_permitted(): the simulated caller is root with CAP_SYS_BOOT.
        if flags != flags & KEXEC_FILE_FLAGS:
            raise _oserror(errno.EINVAL)
        # kexec_trylock() cannot fail: the simulator is single-threaded.
        if flags & KEXEC_FILE_UNLOAD:
            if is_crash:
                self.kexec_crash_image = None
            else:
                self.kexec_image = None
            return
        if is_crash:
            self.kexec_crash_image = None
        if isinstance(cmdline, str):
            cmdline_buf: bytes | int = cmdline.encode("utf-8", "surrogateescape") + b"\0" if cmdline else b""
        else:
            cmdline_buf = cmdline if isinstance(cmdline, int) else bytes(cmdline)
        try:
            image = self.kimage_file_alloc_init(kernel, initrd, cmdline_buf, flags)
            self.kexec_dprintk(f"{_PR_FILE}nr_segments = {image.nr_segments}")
            for i, seg in enumerate(image.segments):
                self.kexec_dprintk(f"{_PR_FILE}segment[{i}]: buf=0x{_hashed_ptr(i, seg.mem)} "
                                   f"bufsz={seg.bufsz:#x} mem={seg.mem:#x} memsz={seg.memsz:#x}")
            self.kexec_dprintk(f"{_PR_FILE}kexec_file_load: type:{image.type}, start:{image.start:#x} "
                               f"head:{image.head:#x} flags:{flags:#x}")
        finally:
            self.kexec_file_dbg_print = False
        if is_crash:
            self.kexec_crash_image = image
        else:
            self.kexec_image = image

    def kimage_file_alloc_init(self, kernel: bytes | int, initrd: bytes | int | None,
                               cmdline_buf: bytes | int, flags: int) -> Kimage:
        image = Kimage(self)
        self.kexec_file_dbg_print = bool(flags & KEXEC_FILE_DEBUG)
        if flags & KEXEC_FILE_ON_CRASH:
            image.type = KEXEC_TYPE_CRASH
        ret = self.kimage_file_prepare_segments(image, kernel, initrd, cmdline_buf, flags)
        if ret:
            raise _oserror(-ret)
        ret = self.sanity_check_segment_list(image)
        if ret:
            raise _oserror(-ret)
        # kimage_alloc_control_pages() and machine_kexec_prepare() always succeed here.
        # The first indirection page: the kernel takes any free page; the simulator names
        # the page below the lowest destination (only kexec -d ever prints it).
        image.head = ((min(s.mem for s in image.segments) - PAGE_SIZE) & U64_MAX) | 0x2
        return image

    def kimage_file_prepare_segments(self, image: Kimage, kernel: bytes | int, initrd: bytes | int | None,
                                     cmdline_buf: bytes | int, flags: int) -> int:
        ret = _kernel_read_file(kernel)
        if ret:
            return ret
        assert isinstance(kernel, bytes)
        self.kexec_dprintk(f"{_PR_FILE}kernel: {_hashed_ptr(id(kernel))} kernel_size: {len(kernel):#x}")
        ret = self.kexec_image_probe_default(image, kernel)
        if ret:
            return ret
        initrd_buf: bytes | None = None
        if not flags & KEXEC_FILE_NO_INITRAMFS:
            if initrd is None:
                return -errno.EBADF
            ret = _kernel_read_file(initrd)
            if ret:
                return ret
            assert isinstance(initrd, bytes)
            initrd_buf = initrd
        if isinstance(cmdline_buf, int):
            return cmdline_buf
        if cmdline_buf:
            if len(cmdline_buf) > KMALLOC_MAX_SIZE:
                return -errno.ENOMEM
            image.cmdline_buf = cmdline_buf
            if cmdline_buf[-1] != 0:
                return -errno.EINVAL
        # ima_add_kexec_buffer(): CONFIG_IMA_KEXEC=n.
        ret = self.host.kho.kho_fill_kimage(image)
        if ret:
            return ret
        assert image.fops is not None
        return image.fops.load(self, image, kernel, initrd_buf, cmdline_buf)

    def kexec_image_probe_default(self, image: Kimage, kernel: bytes) -> int:
        """Walk the architecture's loaders; the last probe's answer if none takes the image."""
        ret = -errno.ENOEXEC
        for fops in self.host.arch.kexec_file_loaders:
            ret = fops.probe(self, kernel)
            if not ret:
                image.fops = fops
                return 0
        return ret

    def sanity_check_segment_list(self, image: Kimage) -> int:
        for seg in image.segments:
            mstart, mend = seg.mem, (seg.mem + seg.memsz) & U64_MAX
            if mstart > mend:
                return -errno.EADDRNOTAVAIL
            if mstart & (PAGE_SIZE - 1) or mend & (PAGE_SIZE - 1):
                return -errno.EADDRNOTAVAIL
            if mend >= KEXEC_DESTINATION_MEMORY_LIMIT:
                return -errno.EADDRNOTAVAIL
        for i, seg in enumerate(image.segments):
            for prev in image.segments[:i]:
                if seg.mem + seg.memsz > prev.mem and seg.mem < prev.mem + prev.memsz:
                    return -errno.EINVAL
        for seg in image.segments:
            if seg.bufsz > seg.memsz:
                return -errno.EINVAL
        nr_pages = self.host.totalram_pages
        total = 0
        for seg in image.segments:
            pages = (seg.memsz + PAGE_SIZE - 1) // PAGE_SIZE
            if pages > nr_pages // 2:
                return -errno.EINVAL
            total += pages
        if total > nr_pages // 2:
            return -errno.EINVAL
        return 0

    # -- reboot --

    def machine_kexec(self) -> tuple[int, int]:
        """Copy every segment to its destination and "jump": return what the architecture's
        machine_kexec starts the next kernel with (kernel load address, boot register).

        kernel_kexec() refuses with -EINVAL when nothing is loaded.
        """
        image = self.kexec_image
        if image is None:
            raise _oserror(errno.EINVAL)
        physmem = self.host.physmem
        for seg in image.segments:
            physmem.write(seg.mem, seg.buffer[:seg.bufsz])
            physmem.fill(seg.mem + seg.bufsz, seg.memsz - seg.bufsz, 0)
        return self.host.arch.machine_kexec(image)


def kernel_read_file_size(size: int, ram: int) -> int:
    """kernel_read_file()'s answer from a file's size alone, before it reads a byte: -EINVAL
    for an empty file, -EFBIG over the limit, -ENOMEM where its vmalloc'ed buffer cannot fit
    in `ram` bytes; 0 to read it."""
    if size <= 0:
        return -errno.EINVAL
    if size > KEXEC_FILE_SIZE_MAX:
        return -errno.EFBIG
    return -errno.ENOMEM if size > ram else 0


def _kernel_read_file(data: bytes | int) -> int:
    """kernel_read_file() of a file already in memory (so it fitted); an int is its failure."""
    if isinstance(data, int):
        return data
    return kernel_read_file_size(len(data), len(data))


__all__ = [
    "COMMAND_LINE_SIZE", "KEXEC_BUF_MEM_UNKNOWN", "KEXEC_FILE_DEBUG", "KEXEC_FILE_FLAGS",
    "KEXEC_FILE_NO_INITRAMFS", "KEXEC_FILE_ON_CRASH", "KEXEC_FILE_UNLOAD", "KEXEC_SEGMENT_MAX",
    "KEXEC_TYPE_CRASH", "KEXEC_TYPE_DEFAULT", "Kexec", "KexecBuf", "KexecHost", "KexecSegment",
    "KhoHooks", "Kimage", "kexec_add_buffer", "locate_mem_hole_callback",
]


def kernel_read_file_from_fd(fd: int) -> bytes | int:
    """kernel_read_file_from_fd() on a host file descriptor: its bytes, or the -errno.

    For callers that hold a real process's fd (the seccomp supervisor): an fd not
    open for reading (or O_PATH) is -EBADF, a non-regular file -EINVAL, an empty
    one -EINVAL and one over KEXEC_FILE_SIZE_MAX -EFBIG, as the kernel answers;
    nothing past the limit is read.
    """
    try:
        mode = os.stat(fd).st_mode
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        return -errno.EBADF
    if flags & os.O_PATH or flags & os.O_ACCMODE == os.O_WRONLY:
        return -errno.EBADF
    if not stat.S_ISREG(mode):
        return -errno.EINVAL
    size = os.fstat(fd).st_size
    if size <= 0:
        return -errno.EINVAL
    if size > KEXEC_FILE_SIZE_MAX:
        return -errno.EFBIG
    chunks, pos = [], 0
    while pos < size:
        try:
            chunk = os.pread(fd, min(size - pos, 1 << 24), pos)
        except OSError as e:
            return -(e.errno or errno.EIO)
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
    if pos != size:                     # kernel_read_file(): a short read is -EIO
        return -errno.EIO
    return b"".join(chunks)
