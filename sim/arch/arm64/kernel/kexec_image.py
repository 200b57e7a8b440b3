"""arch/arm64/kernel/kexec_image.c (Linux 6.16): kexec_file_load's loader for an arm64 Image.

``image_probe`` checks only the size and the ``ARM\\x64`` magic and says nothing (an x86
bzImage gets -EINVAL, which kexec_image_probe_default passes on); ``image_load`` refuses
crash images, an image_size of 0, a page size the CPU lacks, and places the kernel
bottom-up, 2 MiB-aligned, with text_offset added, then the initrd and DTB after it
(machine_kexec_file.c).  The simulated CPU is a Cortex-A57: 4K and 64K granules, mixed
endian supported.
"""

import errno
from typing import TYPE_CHECKING

from sim.arch.arm64.boot.image import (
    ARM64_IMAGE_FLAG_BE,
    ARM64_IMAGE_FLAG_PAGE_SIZE_16K,
    ARM64_IMAGE_FLAG_PAGE_SIZE_MASK,
    ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT,
    ARM64_IMAGE_HEADER_SIZE,
    ARM64_IMAGE_MAGIC,
    Arm64ImageHeader,
    arm64_image_flag_field,
)
from sim.arch.arm64.kernel.machine_kexec_file import load_other_segments
from sim.kernel.kexec_file import KEXEC_BUF_MEM_UNKNOWN, KexecBuf
from sim.sizes import SZ_2M, ULONG_MAX

if TYPE_CHECKING:
    from sim.kernel.kexec_file import Kexec, Kimage

PR_FMT = "kexec_file(Image): "
MIN_KIMG_ALIGN = SZ_2M
# Cortex-A57 ID_AA64MMFR0_EL1: BigEnd supported, TGran16 not implemented.
SYSTEM_SUPPORTS_MIXED_ENDIAN = True
SYSTEM_SUPPORTS_16KB_GRANULE = False


def image_probe(kexec: "Kexec", kernel: bytes) -> int:
    if len(kernel) < ARM64_IMAGE_HEADER_SIZE:
        return -errno.EINVAL
    if Arm64ImageHeader.unpack(kernel).magic != ARM64_IMAGE_MAGIC:
        return -errno.EINVAL
    return 0


def image_load(kexec: "Kexec", image: "Kimage", kernel: bytes, initrd: bytes | None, cmdline: bytes) -> int:
    if image.is_crash:
        return -errno.EOPNOTSUPP
    h = Arm64ImageHeader.unpack(kernel)
    if not h.image_size:
        return -errno.EINVAL
    be_image = bool(h.flags & ARM64_IMAGE_FLAG_BE)
    if be_image and not SYSTEM_SUPPORTS_MIXED_ENDIAN:
        return -errno.EINVAL
    page_size = arm64_image_flag_field(h.flags, ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT,
                                       ARM64_IMAGE_FLAG_PAGE_SIZE_MASK)
    if page_size == ARM64_IMAGE_FLAG_PAGE_SIZE_16K and not SYSTEM_SUPPORTS_16KB_GRANULE:
        return -errno.EINVAL
    kbuf = KexecBuf(image, kernel, len(kernel), mem=KEXEC_BUF_MEM_UNKNOWN,
                    memsz=h.image_size + h.text_offset, buf_align=MIN_KIMG_ALIGN, buf_min=0,
                    buf_max=ULONG_MAX, top_down=False)
    ret = kexec.kexec_add_buffer(kbuf)
    if ret:
        return ret
    segment = image.segments[-1]
    segment.mem += h.text_offset
    segment.memsz -= h.text_offset
    image.start = segment.mem
    kexec.host.printk.pr_debug(f"{PR_FMT}Loaded kernel at 0x{segment.mem:x} bufsz=0x{kbuf.bufsz:x} "
                               f"memsz=0x{segment.memsz:x}")
    text = cmdline.split(b"\0", 1)[0].decode("utf-8", "surrogateescape") if cmdline else None
    return load_other_segments(kexec, image, segment.mem, segment.memsz, initrd, text)
