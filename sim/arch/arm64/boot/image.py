"""The arm64 ``Image`` (Documentation/arch/arm64/booting.rst, arch/arm64/include/asm/image.h).

A 64-byte header a boot loader and kexec read — ``code0``/``code1``, ``text_offset``,
``image_size``, ``flags``, three reserved words, the magic ``ARM\\x64`` and the PE header
offset — then, at ``_stext`` (64 KiB, SEGMENT_ALIGN), the simulator's payload header
(sim.arch.x86.boot.bzimage.kernel_payload: release, CONFIG_CMDLINE, init size), which a kernel that has
just been jumped to reads from RAM to learn what it is.  ``image_size`` is the size the
kernel needs from its load address (``_end - _text``); ``text_offset`` is 0 as for every
kernel since 5.10.  The link layout inside ``image_size`` (``_stext``, ``__init_begin``,
``_sdata``) is the simulator's: code in the first half, data in the last quarter.
"""

import struct
from dataclasses import dataclass

from sim.arch.x86.boot.bzimage import (
    KERNEL_VERSIONS,
    KernelInfo,
    kernel_payload,
    read_kernel_info,
)
from sim.physmem import PhysMem
from sim.sizes import SZ_64K

ARM64_IMAGE_MAGIC = b"ARM\x64"
ARM64_IMAGE_HEADER_SIZE = 64
ARM64_IMAGE_FLAG_BE = 1 << 0
ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT = 1
ARM64_IMAGE_FLAG_PAGE_SIZE_MASK = 0x3
ARM64_IMAGE_FLAG_PAGE_SIZE_4K = 1
ARM64_IMAGE_FLAG_PAGE_SIZE_16K = 2
ARM64_IMAGE_FLAG_PAGE_SIZE_64K = 3
ARM64_IMAGE_FLAG_PHYS_BASE = 1 << 3
# A little-endian 4K-page kernel that may sit anywhere in RAM: what defconfig builds.
ARM64_IMAGE_FLAGS = ((ARM64_IMAGE_FLAG_PAGE_SIZE_4K << ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT)
                     | ARM64_IMAGE_FLAG_PHYS_BASE)
# code0 of an EFI-stub kernel reads "MZ" (ccmp x18, #0, #0xd, pl); code1 branches to primary_entry.
CODE0_EFI = 0xFA405A4D
CODE1_BRANCH = 0x14000000 | ((SZ_64K - 4) >> 2)
PE_HEADER_OFFSET = 0x40
STEXT_OFFSET = SZ_64K           # _stext - _text: SEGMENT_ALIGN

_HEADER = struct.Struct("<IIQQQQQQ4sI")


@dataclass(frozen=True)
class Arm64ImageHeader:
    """struct arm64_image_header."""

    code0: int
    code1: int
    text_offset: int
    image_size: int
    flags: int
    res2: int
    res3: int
    res4: int
    magic: bytes
    res5: int

    @classmethod
    def unpack(cls, raw: bytes) -> "Arm64ImageHeader":
        return cls(*_HEADER.unpack_from(raw))

    def pack(self) -> bytes:
        return _HEADER.pack(self.code0, self.code1, self.text_offset, self.image_size, self.flags,
                            self.res2, self.res3, self.res4, self.magic, self.res5)


def arm64_image_flag_field(flags: int, shift: int, mask: int) -> int:
    return (flags >> shift) & mask


def make_image(kernel_version: str = "6.16", cmdline: str = "", image_size: int = 32 << 20) -> bytes:
    """An arm64 Image the kernel's image_probe and kexec-tools accept; cmdline is its CONFIG_CMDLINE."""
    if kernel_version not in KERNEL_VERSIONS:
        raise ValueError(f"unknown kernel version {kernel_version!r}; "
                         f"choose one of {', '.join(KERNEL_VERSIONS)}")
    builtin = cmdline.encode("utf-8", "surrogateescape")
    if len(builtin) >= 2048 or b"\0" in builtin:
        raise ValueError("CONFIG_CMDLINE must be shorter than COMMAND_LINE_SIZE and contain no NUL")
    payload = kernel_payload(kernel_version, builtin, image_size)
    if not STEXT_OFFSET + len(payload) <= image_size < 1 << 48:
        raise ValueError(f"image_size {image_size:#x} cannot hold the kernel")
    header = Arm64ImageHeader(CODE0_EFI, CODE1_BRANCH, 0, image_size, ARM64_IMAGE_FLAGS, 0, 0, 0,
                              ARM64_IMAGE_MAGIC, PE_HEADER_OFFSET).pack()
    return header.ljust(STEXT_OFFSET, b"\0") + payload


def read_image_info(physmem: PhysMem, load_addr: int) -> KernelInfo | None:
    """What the kernel at load_addr (its _text) is: None unless an Image header and our payload are there."""
    if load_addr < 0 or load_addr + ARM64_IMAGE_HEADER_SIZE > physmem.size:
        return None
    header = Arm64ImageHeader.unpack(physmem.read(load_addr, ARM64_IMAGE_HEADER_SIZE))
    if header.magic != ARM64_IMAGE_MAGIC or not header.image_size:
        return None
    info = read_kernel_info(physmem, load_addr + STEXT_OFFSET)
    if info is None:
        return None
    return KernelInfo(info.release, info.version, info.builtin_cmdline, header.image_size)
