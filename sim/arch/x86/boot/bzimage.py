"""arch/x86/boot: a minimal bzImage the simulated kernels boot from, and kexec's bzImage64_probe().

The image has a real boot-protocol 2.15 setup header (so `file`, kexec-tools and
``bzImage64_probe`` accept it) followed by a protected-mode payload.  Real
payloads start with decompressor code; ours starts with a small header of the
simulator's own design that says what kernel this is.  A kernel that has just
been jumped to learns its release, its ``CONFIG_CMDLINE`` and its init_size
from that header in RAM (`read_kernel_info`), never from Python state — so a
``kexec -e`` into a 6.17 image boots a 6.17 kernel because the bytes say so.

Payload header (little-endian, at the kernel load address):

  ======  ====  =====================================================
  offset  size  field
  ======  ====  =====================================================
  0       8     magic ``b"KHOFSKRN"``
  8       4     header format version (1)
  12      4     header size in bytes (strings included)
  16      4     init_size (same value as the setup header's)
  20      4     offset of ``kernel_info`` ("LToP") from the payload start
  24      2+2   offset, length of the release string (e.g. ``6.16.0-khofs``)
  28      2+2   offset, length of the built-in command line (CONFIG_CMDLINE)
  32      ...   the two strings, each NUL-terminated
  ======  ====  =====================================================
"""

import re
import struct
from dataclasses import dataclass
from errno import ENOEXEC

from sim.arch.x86.bootparam import (
    BOOT_FLAG_MAGIC,
    COMMAND_LINE_SIZE,
    HDRS_MAGIC,
    LOADED_HIGH,
    SETUP_HEADER_END,
    SETUP_HEADER_OFFSET,
    SETUP_TYPE_MAX,
    XLF_5LEVEL,
    XLF_CAN_BE_LOADED_ABOVE_4G,
    XLF_KERNEL_64,
    BootParams,
)
from sim.kernel.printk import Printk
from sim.physmem import PhysMem
from sim.sizes import SZ_2M, SZ_16M, round_up

KERNEL_VERSIONS = ("6.16", "6.17", "6.18")
# uname -r of each simulated kernel.  6.17 is the stable line with "kho: only fill
# kimage if KHO is finalized" (6.17.4+), which is what the simulator's 6.17 models.
KERNEL_RELEASES = {"6.16": "6.16.0-khofs", "6.17": "6.17.4-khofs", "6.18": "6.18.0-khofs"}
_BUILD_DATES = {"6.16": "Sun Jul 27 00:00:00 UTC 2025", "6.17": "Sun Oct 19 00:00:00 UTC 2025",
                "6.18": "Sun Nov 30 00:00:00 UTC 2025"}

BOOT_PROTOCOL_VERSION = 0x020F     # 2.15, as a current kernel's header.S
SETUP_SECTS = 4
KERNEL_VERSION_STRING_OFFSET = 0x300   # inside the setup code; hdr.kernel_version = this - 0x200
LOAD_PHYSICAL_ADDR = SZ_16M            # pref_address
PAYLOAD_MAGIC = b"KHOFSKRN"
PAYLOAD_HEADER_VERSION = 1
_PAYLOAD_HDR = struct.Struct("<8sIIIIHHHH")
KERNEL_INFO_MAGIC = b"LToP"

# pr_fmt of arch/x86/kernel/kexec-bzimage64.c: its probe is here, its loader in sim.kernel.kexec_file.
BZIMAGE64_PR_FMT = "kexec-bzImage64: "


@dataclass(frozen=True)
class KernelInfo:
    """What a freshly started kernel reads about itself from its payload header."""

    release: str            # uname -r, e.g. "6.16.0-khofs"
    version: str            # "6.16" / "6.17" / "6.18"
    builtin_cmdline: str    # CONFIG_CMDLINE ("" = CONFIG_CMDLINE_BOOL unset)
    init_size: int


# LINUX_COMPILE_BY@LINUX_COMPILE_HOST and LINUX_COMPILER of the simulated builds (Debian 13's toolchain).
LINUX_COMPILE_BY_HOST = "khofs@khofs"
LINUX_COMPILER = "gcc (Debian 14.2.0-19) 14.2.0, GNU ld (GNU Binutils for Debian) 2.44"


def _uts_version(kernel_version: str) -> str:
    return f"#1 SMP PREEMPT_DYNAMIC {_BUILD_DATES[kernel_version]}"


def kernel_version_string(kernel_version: str) -> str:
    """The string hdr.kernel_version points at: UTS_RELEASE (user@host) UTS_VERSION."""
    return f"{KERNEL_RELEASES[kernel_version]} ({LINUX_COMPILE_BY_HOST}) {_uts_version(kernel_version)}"


def linux_banner(kernel_version: str) -> str:
    """init/version.c linux_banner: as the version string, with the compiler after user@host."""
    return (f"Linux version {KERNEL_RELEASES[kernel_version]} ({LINUX_COMPILE_BY_HOST}) "
            f"({LINUX_COMPILER}) {_uts_version(kernel_version)}")


def kernel_payload(kernel_version: str, cmdline: bytes, init_size: int) -> bytes:
    """The payload header above and one page of "code": the part of any architecture's image we boot."""
    release = KERNEL_RELEASES[kernel_version].encode()
    rel_off = _PAYLOAD_HDR.size
    cmd_off = rel_off + len(release) + 1
    hdr_size = cmd_off + len(cmdline) + 1
    ki_off = round_up(hdr_size, 16)
    head = _PAYLOAD_HDR.pack(PAYLOAD_MAGIC, PAYLOAD_HEADER_VERSION, hdr_size, init_size, ki_off,
                             rel_off, len(release), cmd_off, len(cmdline))
    body = bytearray(head + release + b"\0" + cmdline + b"\0")
    body += bytes(ki_off - len(body))
    # kernel_info (boot protocol 2.15): "LToP", size, size_total, setup_type_max.
    body += KERNEL_INFO_MAGIC + struct.pack("<III", 16, 16, SETUP_TYPE_MAX)
    # One page of "code": the 64-bit entry point is at +0x200 as in a real image.
    return bytes(body.ljust(round_up(len(body), 4096), b"\0"))


def make_bzimage(kernel_version: str = "6.16", cmdline: str = "", init_size: int = 32 << 20) -> bytes:
    """Build an image bzImage64_probe() accepts; `cmdline` becomes the image's CONFIG_CMDLINE."""
    if kernel_version not in KERNEL_VERSIONS:
        raise ValueError(f"unknown kernel version {kernel_version!r}; "
                         f"choose one of {', '.join(KERNEL_VERSIONS)}")
    builtin = cmdline.encode("utf-8", "surrogateescape")
    if len(builtin) >= COMMAND_LINE_SIZE or b"\0" in builtin:
        raise ValueError("CONFIG_CMDLINE must be shorter than COMMAND_LINE_SIZE and contain no NUL")
    if not 0 < init_size < 1 << 32:
        raise ValueError(f"init_size {init_size:#x} does not fit the setup header")
    payload = kernel_payload(kernel_version, builtin, init_size)
    setup = bytearray((SETUP_SECTS + 1) * 512)
    version = kernel_version_string(kernel_version).encode() + b"\0"
    setup[KERNEL_VERSION_STRING_OFFSET:KERNEL_VERSION_STRING_OFFSET + len(version)] = version
    hdr = BootParams(
        setup_sects=SETUP_SECTS,
        syssize=(len(payload) + 15) // 16,
        vid_mode=0xFFFF,
        boot_flag=BOOT_FLAG_MAGIC,
        # "jmp short" over the header: the byte at 0x201 is where the header ends - 0x202.
        jump=0xEB | ((SETUP_HEADER_END - 0x202) << 8),
        header=HDRS_MAGIC,
        version=BOOT_PROTOCOL_VERSION,
        start_sys_seg=0x1000,
        kernel_version=KERNEL_VERSION_STRING_OFFSET - 0x200,
        loadflags=LOADED_HIGH,
        setup_move_size=0x8000,
        code32_start=0x100000,
        initrd_addr_max=0x7FFFFFFF,
        kernel_alignment=SZ_2M,
        relocatable_kernel=1,
        min_alignment=21,
        xloadflags=XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G | XLF_5LEVEL,
        cmdline_size=COMMAND_LINE_SIZE - 1,
        pref_address=LOAD_PHYSICAL_ADDR,
        init_size=init_size,
        kernel_info_offset=struct.unpack_from("<I", payload, 20)[0],
    ).to_bytes()
    setup[SETUP_HEADER_OFFSET:SETUP_HEADER_END] = hdr[SETUP_HEADER_OFFSET:SETUP_HEADER_END]
    return bytes(setup) + payload


def setup_header(image: bytes) -> bytes:
    """The setup header as boot.rst says to copy it: from 0x1f1 to 0x202 plus the jump's offset byte."""
    return image[SETUP_HEADER_OFFSET:0x0202 + image[0x0201]]


def kern16_size(image: bytes) -> int:
    """Bytes of real-mode setup before the protected-mode payload (setup_sects 0 means 4)."""
    sects = image[0x1F1] or 4
    return (sects + 1) * 512


def read_kernel_info(physmem: PhysMem, load_addr: int) -> KernelInfo | None:
    """Decode the payload header at load_addr; None for anything that is not one of our kernels."""
    if load_addr < 0 or load_addr + _PAYLOAD_HDR.size > physmem.size:
        return None
    (magic, hver, hsize, init_size, _ki, rel_off, rel_len, cmd_off,
     cmd_len) = _PAYLOAD_HDR.unpack(physmem.read(load_addr, _PAYLOAD_HDR.size))
    if magic != PAYLOAD_MAGIC or hver != PAYLOAD_HEADER_VERSION:
        return None
    if hsize > 8192 or load_addr + hsize > physmem.size:
        return None
    if rel_off + rel_len >= hsize or cmd_off + cmd_len >= hsize:
        return None
    blob = physmem.read(load_addr, hsize)
    try:
        release = blob[rel_off:rel_off + rel_len].decode("ascii")
    except UnicodeDecodeError:
        return None
    m = re.match(r"(\d+\.\d+)\.", release)
    if m is None or m.group(1) not in KERNEL_VERSIONS:
        return None
    builtin = blob[cmd_off:cmd_off + cmd_len].decode("utf-8", "surrogateescape")
    return KernelInfo(release, m.group(1), builtin, init_size)


def apply_builtin_cmdline(builtin: str, boot_command_line: str) -> str:
    """x86 setup_arch() with CONFIG_CMDLINE_BOOL (no override): builtin + " " + boot loader's.

    strlcat() into a COMMAND_LINE_SIZE buffer truncates at 2047 bytes; an empty
    builtin leaves the boot loader's line untouched (and a non-empty one adds the
    space even when the boot loader passed nothing, as the kernel does).
    """
    if not builtin:
        return boot_command_line
    raw = (builtin + " " + boot_command_line).encode("utf-8", "surrogateescape")
    return raw[:COMMAND_LINE_SIZE - 1].decode("utf-8", "surrogateescape")


def bzImage64_probe(kernel: bytes, printk: Printk) -> int:
    """arch/x86/kernel/kexec-bzimage64.c: each rejection logs one pr_err line and gives -ENOEXEC."""
    if len(kernel) < 2 * 512:
        printk.pr_err(BZIMAGE64_PR_FMT + "File is too short to be a bzImage")
        return -ENOEXEC
    bp = BootParams.from_bytes(kernel[:4096].ljust(4096, b"\0"))
    if bp.header != HDRS_MAGIC:
        printk.pr_err(BZIMAGE64_PR_FMT + "Not a bzImage")
        return -ENOEXEC
    if bp.boot_flag != BOOT_FLAG_MAGIC:
        printk.pr_err(BZIMAGE64_PR_FMT + "No x86 boot sector present")
        return -ENOEXEC
    if bp.version < 0x020C:
        printk.pr_err(BZIMAGE64_PR_FMT + "Must be at least protocol version 2.12")
        return -ENOEXEC
    if not bp.loadflags & LOADED_HIGH:
        printk.pr_err(BZIMAGE64_PR_FMT + "zImage not a bzImage")
        return -ENOEXEC
    if not bp.xloadflags & XLF_KERNEL_64:
        printk.pr_err(BZIMAGE64_PR_FMT + "Not a bzImage64. XLF_KERNEL_64 is not set.")
        return -ENOEXEC
    if not bp.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G:
        printk.pr_err(BZIMAGE64_PR_FMT + "XLF_CAN_BE_LOADED_ABOVE_4G is not set.")
        return -ENOEXEC
    # The simulated machine boots with BIOS (no 32-bit EFI) and 4-level paging, so the
    # 32-bit-EFI and XLF_5LEVEL checks that follow in the kernel cannot fire.
    printk.pr_debug(BZIMAGE64_PR_FMT + "It's a relocatable bzImage64")
    return 0
