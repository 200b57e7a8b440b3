"""kernel/kexec_file.c and kexec_core.c: kexec_file_load(), machine_kexec() (Linux 6.16).

Mirrors kernel/kexec_file.c (syscall, kimage_file_prepare_segments,
kexec_add_buffer, kexec_locate_mem_hole and its top-down/bottom-up searches),
the checks of kernel/kexec_core.c sanity_check_segment_list(), and
arch/x86/kernel/kexec-bzimage64.c (bzImage64_load, setup_boot_parameters,
setup_kho, setup_rng_seed).  Errors surface as OSError with the syscall's errno.

The loaded image lives in Python memory of the *old* kernel, as the kernel
keeps it in its own pages until ``reboot(LINUX_REBOOT_CMD_KEXEC)``; only
`machine_kexec` writes it to its destinations in simulated RAM, and the next
kernel gets nothing but that RAM and the two "registers" it returns.

Configuration of the simulated kernel, as far as this file is concerned:
CONFIG_EFI=y on a BIOS-booted machine (EFI setup_data space is reserved but not
linked), CONFIG_IMA_KEXEC=n, CONFIG_OF_FLATTREE=n, CONFIG_KEXEC_HANDOVER=y,
CONFIG_CRASH_DUMP=y with no ``crashkernel=`` reservation, the RNG initialised
(so an RNG seed is always handed over).

Cold boot: `write_cold_boot` plays firmware and boot loader.  It puts the
protected-mode payload at 16 MiB, the zero page at `COLD_BOOT_PARAMS_ADDR`
(0x90000) and the command line at `COLD_BOOT_CMDLINE_ADDR` (0x99000), both below
1 MiB where a boot loader puts them and where x86 Linux reserves memory anyway,
and an initrd, if any, as high as it fits below ``initrd_addr_max``.
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

from sim.arch.x86.boot.bzimage import BZIMAGE64_PR_FMT as _PR_BZ
from sim.arch.x86.boot.bzimage import kern16_size, make_bzimage, setup_header
from sim.arch.x86.bootparam import (
    BOOT_PARAMS_SIZE,
    COMMAND_LINE_SIZE,
    E820_MAX_ENTRIES_ZEROPAGE,
    E820_TYPE_RAM,
    KHO_DATA_SIZE,
    SETUP_DATA_HDR_SIZE,
    SETUP_HEADER_OFFSET,
    SETUP_KEXEC_KHO,
    SETUP_RNG_SEED,
    BootParams,
    E820Entry,
    KhoData,
    pack_setup_data,
)
from sim.kernel.printk import Printk
from sim.physmem import PhysMem
from sim.sizes import PAGE_SIZE, SZ_1M, SZ_16M, U64_MAX, ULONG_MAX

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

# arch/x86/kernel/kexec-bzimage64.c
MIN_PURGATORY_ADDR = 0x3000
MIN_BOOTPARAM_ADDR = 0x3000
MIN_KERNEL_LOAD_ADDR = 0x100000
MIN_INITRD_LOAD_ADDR = 0x1000000
MAX_ELFCOREHDR_STR_LEN = 30
RNG_SEED_LENGTH = 32
EFI_SETUP_DATA_SIZE = 96          # sizeof(struct efi_setup_data)
ELFCOREHDR_SIZE = 0x2000          # what crash_load_segments() would ask for (never placed: no crashkernel=)
# The purgatory: x86's purgatory.ro gives a 0x4000-byte buffer plus a page of .bss (its stack).
PURGATORY_BUFSZ = 0x4000
PURGATORY_MEMSZ = 0x5000
PURGATORY_MAGIC = b"khofs purgatory\0"
ENTRY64_REGS_OFFSET = 0x10        # struct kexec_entry64_regs inside the simulated purgatory
_ENTRY64_REGS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                 "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")
TYPE_OF_LOADER_KEXEC = 0x0D << 4

# write_cold_boot() layout, below 1 MiB.
COLD_BOOT_PARAMS_ADDR = 0x90000
COLD_BOOT_CMDLINE_ADDR = 0x99000
COLD_BOOT_TYPE_OF_LOADER = 0xFF     # "boot loader without an assigned id" (boot.rst)

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

    # -- arch/x86/kernel/kexec-bzimage64.c --

    def bzImage64_load(self, image: Kimage, kernel: bytes, initrd: bytes | None,
                       cmdline: bytes) -> int:
        printk = self.host.printk
        hdr = BootParams.from_bytes(kernel[:BOOT_PARAMS_SIZE].ljust(BOOT_PARAMS_SIZE, b"\0"))
        k16 = kern16_size(kernel)
        if len(kernel) < k16:
            printk.pr_err(_PR_BZ + "bzImage truncated")
            return -errno.ENOEXEC
        cmdline_len = len(cmdline)
        if cmdline_len > hdr.cmdline_size:
            printk.pr_err(_PR_BZ + "Kernel command line too long")
            return -errno.EINVAL
        if cmdline_len + MAX_ELFCOREHDR_STR_LEN > hdr.cmdline_size:
            printk.pr_err(_PR_BZ + "Appending elfcorehdr=<addr> to command line exceeds maximum "
                          "allowed length")
            return -errno.EINVAL
        if image.is_crash:
            # crash_load_segments(): the ELF core header goes bottom-up into crashk_res,
            # which without crashkernel= is the empty [0, 0] -> -EADDRNOTAVAIL.
            ret = self.kexec_add_buffer(KexecBuf(image, bytes(ELFCOREHDR_SIZE), ELFCOREHDR_SIZE,
                                                 memsz=ELFCOREHDR_SIZE, buf_max=ULONG_MAX))
            if ret:
                return ret

        pbuf = KexecBuf(image, bytes(PURGATORY_BUFSZ), PURGATORY_BUFSZ, memsz=PURGATORY_MEMSZ,
                        buf_align=16, buf_min=MIN_PURGATORY_ADDR, buf_max=ULONG_MAX, top_down=True)
        ret = self.kexec_add_buffer(pbuf)
        if ret:
            printk.pr_err(_PR_BZ + "Loading purgatory failed")
            return ret
        purgatory = image.segments[-1]
        image.start = pbuf.mem
        self.kexec_dprintk(f"{_PR_BZ}Loaded purgatory at {pbuf.mem:#x}")

        params_cmdline_sz = ALIGN(BOOT_PARAMS_SIZE + cmdline_len + MAX_ELFCOREHDR_STR_LEN, 16)
        efi_map_sz = 0
        bufsz = (params_cmdline_sz + ALIGN(efi_map_sz, 16) + SETUP_DATA_HDR_SIZE + EFI_SETUP_DATA_SIZE
                 + SETUP_DATA_HDR_SIZE + RNG_SEED_LENGTH + SETUP_DATA_HDR_SIZE + KHO_DATA_SIZE)
        params = bytearray(bufsz)
        efi_setup_data_offset = params_cmdline_sz + ALIGN(efi_map_sz, 16)
        header = setup_header(kernel)
        params[SETUP_HEADER_OFFSET:SETUP_HEADER_OFFSET + len(header)] = header
        kbuf = KexecBuf(image, bytes(params), bufsz, memsz=bufsz, buf_align=16, buf_min=MIN_BOOTPARAM_ADDR,
                        buf_max=ULONG_MAX, top_down=True)
        ret = self.kexec_add_buffer(kbuf)
        if ret:
            return ret
        params_seg = image.segments[-1]
        bootparam_load_addr = kbuf.mem
        self.kexec_dprintk(f"{_PR_BZ}Loaded boot_param, command line and misc at {bootparam_load_addr:#x} "
                           f"bufsz={kbuf.bufsz:#x} memsz={kbuf.memsz:#x}")

        kbuf = KexecBuf(image, kernel[k16:], len(kernel) - k16,
                        memsz=ALIGN(hdr.init_size, PAGE_SIZE), buf_align=hdr.kernel_alignment,
                        buf_min=max(hdr.pref_address, MIN_KERNEL_LOAD_ADDR), buf_max=ULONG_MAX,
                        top_down=True)
        ret = self.kexec_add_buffer(kbuf)
        if ret:
            return ret
        kernel_load_addr = kbuf.mem
        self.kexec_dprintk(f"{_PR_BZ}Loaded 64bit kernel at {kernel_load_addr:#x} "
                           f"bufsz={kbuf.bufsz:#x} memsz={kbuf.memsz:#x}")

        bp = BootParams.from_bytes(bytes(params[:BOOT_PARAMS_SIZE]))
        if initrd is not None:
            kbuf = KexecBuf(image, initrd, len(initrd), memsz=len(initrd), buf_align=PAGE_SIZE,
                            buf_min=MIN_INITRD_LOAD_ADDR, buf_max=ULONG_MAX, top_down=True)
            ret = self.kexec_add_buffer(kbuf)
            if ret:
                return ret
            image.initrd_load_addr = kbuf.mem
            self.kexec_dprintk(f"{_PR_BZ}Loaded initrd at {kbuf.mem:#x} bufsz={len(initrd):#x} "
                               f"memsz={len(initrd):#x}")
            bp.ramdisk_image = kbuf.mem & 0xFFFFFFFF
            bp.ramdisk_size = len(initrd) & 0xFFFFFFFF
            bp.ext_ramdisk_image = kbuf.mem >> 32
            bp.ext_ramdisk_size = len(initrd) >> 32

        # setup_cmdline(): the line goes right after the zero page; its last byte is forced
        # to NUL (with cmdline_len 0 that is the zero page's last byte, as in the kernel).
        params[BOOT_PARAMS_SIZE:BOOT_PARAMS_SIZE + cmdline_len] = cmdline
        params[BOOT_PARAMS_SIZE + cmdline_len - 1] = 0
        final = bytes(params[BOOT_PARAMS_SIZE:]).split(b"\0", 1)[0]
        self.kexec_dprintk(f"{_PR_BZ}Final command line is: "
                           f"{final.decode('utf-8', 'surrogateescape')}")
        cmdline_ptr_phys = bootparam_load_addr + BOOT_PARAMS_SIZE
        bp.cmd_line_ptr = cmdline_ptr_phys & 0xFFFFFFFF
        if cmdline_ptr_phys >> 32:
            bp.ext_cmd_line_ptr = cmdline_ptr_phys >> 32
        bp.type_of_loader = TYPE_OF_LOADER_KEXEC
        bp.loadflags = 0

        regs = dict.fromkeys(_ENTRY64_REGS, 0)
        regs["rsi"] = bootparam_load_addr
        regs["rip"] = kernel_load_addr + 0x200
        regs["rsp"] = pbuf.mem + PURGATORY_MEMSZ      # stack_end, top of the purgatory's .bss
        purgatory.buffer = _purgatory_bytes(regs)

        self.setup_boot_parameters(image, bp, params, bootparam_load_addr, efi_setup_data_offset)
        params_seg.buffer = bytes(params)
        image.kernel_load_addr = kernel_load_addr
        image.bootparam_load_addr = bootparam_load_addr
        return 0

    def setup_boot_parameters(self, image: Kimage, bp: BootParams, params: bytearray,
                              params_load_addr: int, setup_data_offset: int) -> None:
        # hardware_subarch, screen_info, ACPI RSDP, EDD: all zero on the simulated PC.
        bp.ext_mem_k = 0
        bp.alt_mem_k = 0
        table = list(self.host.e820_table_kexec)[:E820_MAX_ENTRIES_ZEROPAGE]
        bp.e820_table = table
        bp.e820_entries = len(table)
        self.kexec_dprintk(_PR_BZ + "E820 memmap:")
        for e in table:
            end = e.addr + e.size - 1
            self.kexec_dprintk(f"{_PR_BZ}{e.addr:016x}-{end:016x} ({e.type})")
            if e.type != E820_TYPE_RAM:
                continue
            if e.addr <= 0x100000 and end > 0x100000:
                mem_k = (end >> 10) - (0x100000 >> 10)
                bp.ext_mem_k = min(mem_k, 0xFC00)
                bp.alt_mem_k = min(mem_k, 0xFFFFFFFF)
        # CONFIG_EFI: setup_efi_state() links nothing without EFI runtime services,
        # but its space is skipped all the same.
        setup_data_offset += SETUP_DATA_HDR_SIZE + EFI_SETUP_DATA_SIZE
        self.setup_kho(image, bp, params, params_load_addr, setup_data_offset)
        setup_data_offset += SETUP_DATA_HDR_SIZE + KHO_DATA_SIZE
        self.setup_rng_seed(bp, params, params_load_addr, setup_data_offset)
        params[:BOOT_PARAMS_SIZE] = bp.to_bytes()

    def setup_kho(self, image: Kimage, bp: BootParams, params: bytearray, params_load_addr: int,
                  offset: int) -> None:
        """type and len are always written; the entry is linked only with both FDT and scratch."""
        struct.pack_into("<II", params, offset + 8, SETUP_KEXEC_KHO, KHO_DATA_SIZE)
        if not image.kho_fdt or image.kho_scratch is None:
            return
        kho = KhoData(image.kho_fdt, PAGE_SIZE, image.kho_scratch.mem, image.kho_scratch.bufsz)
        params[offset:offset + SETUP_DATA_HDR_SIZE + KHO_DATA_SIZE] = pack_setup_data(
            bp.setup_data, SETUP_KEXEC_KHO, kho.pack())
        bp.setup_data = params_load_addr + offset

    def setup_rng_seed(self, bp: BootParams, params: bytearray, params_load_addr: int,
                       offset: int) -> None:
        """rng_is_initialized() holds in a booted kernel: 32 fresh bytes head the list."""
        seed = self.get_random_bytes(RNG_SEED_LENGTH)
        params[offset:offset + SETUP_DATA_HDR_SIZE + RNG_SEED_LENGTH] = pack_setup_data(
            bp.setup_data, SETUP_RNG_SEED, seed)
        bp.setup_data = params_load_addr + offset

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


def _purgatory_bytes(regs: dict[str, int]) -> bytes:
    """The simulated purgatory: a magic, then struct kexec_entry64_regs; nothing executes it."""
    buf = bytearray(PURGATORY_BUFSZ)
    buf[:len(PURGATORY_MAGIC)] = PURGATORY_MAGIC
    struct.pack_into(f"<{len(_ENTRY64_REGS)}Q", buf, ENTRY64_REGS_OFFSET,
                     *(regs[r] for r in _ENTRY64_REGS))
    return bytes(buf)


def read_entry64_regs(physmem: PhysMem, purgatory: int) -> dict[str, int]:
    values = struct.unpack_from(f"<{len(_ENTRY64_REGS)}Q",
                                physmem.read(purgatory + ENTRY64_REGS_OFFSET, 8 * len(_ENTRY64_REGS)))
    return dict(zip(_ENTRY64_REGS, values, strict=True))


# -- firmware and boot loader --

def write_cold_boot(physmem: PhysMem, e820: list[E820Entry], cmdline: str, kernel_version: str,
                    init_size: int, kernel_load_addr: int = SZ_16M, initrd: bytes | None = None,
                    builtin_cmdline: str = "") -> tuple[int, int]:
    """Do what firmware and a boot loader do: returns (kernel load address, boot_params phys).

    The kernel then has one boot path for cold boot and kexec alike: read the
    zero page and its own payload header from RAM.
    """
    image = make_bzimage(kernel_version, builtin_cmdline, init_size)
    k16 = kern16_size(image)
    physmem.write(kernel_load_addr, image[k16:])
    raw = bytearray(BOOT_PARAMS_SIZE)
    header = setup_header(image)
    raw[SETUP_HEADER_OFFSET:SETUP_HEADER_OFFSET + len(header)] = header
    bp = BootParams.from_bytes(bytes(raw))
    line = cmdline.encode("utf-8", "surrogateescape")
    if len(line) > bp.cmdline_size:
        raise ValueError(f"command line of {len(line)} bytes exceeds cmdline_size {bp.cmdline_size}")
    physmem.write(COLD_BOOT_CMDLINE_ADDR, line + b"\0")
    bp.cmd_line_ptr = COLD_BOOT_CMDLINE_ADDR
    bp.type_of_loader = COLD_BOOT_TYPE_OF_LOADER
    table = list(e820)[:E820_MAX_ENTRIES_ZEROPAGE]
    bp.e820_table = table
    bp.e820_entries = len(table)
    if initrd:
        addr = _cold_initrd_addr(table, len(initrd), bp.initrd_addr_max,
                                 (kernel_load_addr, kernel_load_addr + init_size))
        physmem.write(addr, initrd)
        bp.ramdisk_image = addr & 0xFFFFFFFF
        bp.ramdisk_size = len(initrd) & 0xFFFFFFFF
        bp.ext_ramdisk_image = addr >> 32
        bp.ext_ramdisk_size = len(initrd) >> 32
    bp.write(physmem, COLD_BOOT_PARAMS_ADDR)
    return kernel_load_addr, COLD_BOOT_PARAMS_ADDR


def _cold_initrd_addr(e820: list[E820Entry], size: int, addr_max: int,
                      kernel: tuple[int, int]) -> int:
    """Highest page-aligned RAM spot above 1 MiB ending at or below initrd_addr_max, clear of the kernel."""
    for e in sorted(e820, key=lambda x: x.addr, reverse=True):
        if e.type != E820_TYPE_RAM:
            continue
        lo = max(e.addr, SZ_1M)
        hi = min(e.addr + e.size, addr_max + 1)
        top = (hi - size) & ~(PAGE_SIZE - 1)
        while top >= lo:
            if top + size <= kernel[0] or top >= kernel[1]:
                return top
            top = (kernel[0] - size) & ~(PAGE_SIZE - 1)
    raise ValueError(f"no room for an initrd of {size:#x} bytes below {addr_max:#x}")


__all__ = [
    "COMMAND_LINE_SIZE", "KEXEC_BUF_MEM_UNKNOWN", "KEXEC_FILE_DEBUG", "KEXEC_FILE_FLAGS",
    "KEXEC_FILE_NO_INITRAMFS", "KEXEC_FILE_ON_CRASH", "KEXEC_FILE_UNLOAD", "KEXEC_SEGMENT_MAX",
    "KEXEC_TYPE_CRASH", "KEXEC_TYPE_DEFAULT", "Kexec", "KexecBuf", "KexecHost", "KexecSegment",
    "KhoHooks", "Kimage", "kexec_add_buffer", "locate_mem_hole_callback", "read_entry64_regs",
    "write_cold_boot",
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
