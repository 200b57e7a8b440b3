"""arch/arm64/kernel/machine_kexec_file.c (Linux 6.16): the initrd and DTB segments after the kernel."""

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sim.drivers.of.kexec import of_kexec_alloc_and_setup_fdt
from sim.kernel.kexec_file import KEXEC_BUF_MEM_UNKNOWN, KexecBuf
from sim.lib.fdt_rw import fdt_pack
from sim.sizes import SZ_1G, SZ_2M, ULONG_MAX, round_down

if TYPE_CHECKING:
    from sim.kernel.kexec_file import Kexec, Kimage

PR_FMT = "kexec_file: "


@dataclass
class KimageArch:
    """struct kimage_arch: the DTB built for the next kernel and where it goes."""

    dtb: bytes
    dtb_mem: int


def load_other_segments(kexec: "Kexec", image: "Kimage", kernel_load_addr: int, kernel_size: int,
                        initrd: bytes | None, cmdline: str | None) -> int:
    """Initrd bottom-up within 32 GiB of the kernel's 1 GiB window, then the DTB top-down, 2 MiB-aligned,
    both above the kernel; on failure the image loses the segments added here."""
    orig_segments = len(image.segments)
    buf_min = kernel_load_addr + kernel_size
    ret = _load(kexec, image, kernel_load_addr, buf_min, initrd, cmdline)
    if ret:
        del image.segments[orig_segments:]
    return ret


def _load(kexec: "Kexec", image: "Kimage", kernel_load_addr: int, buf_min: int, initrd: bytes | None,
          cmdline: str | None) -> int:
    host = kexec.host
    initrd_load_addr = 0
    if initrd is not None:
        kbuf = KexecBuf(image, initrd, len(initrd), mem=KEXEC_BUF_MEM_UNKNOWN, memsz=len(initrd),
                        buf_align=0, buf_min=buf_min,
                        buf_max=round_down(kernel_load_addr, SZ_1G) + SZ_1G * 32, top_down=False)
        ret = kexec.kexec_add_buffer(kbuf)
        if ret:
            return ret
        initrd_load_addr = kbuf.mem
        kexec.kexec_dprintk(f"{PR_FMT}Loaded initrd at 0x{kbuf.mem:x} bufsz=0x{kbuf.bufsz:x} "
                            f"memsz=0x{kbuf.memsz:x}")
    dt = host.arch.dt
    dtb = of_kexec_alloc_and_setup_fdt(dt.blob(), dt.initial_boot_params_pa, image, initrd_load_addr,
                                       len(initrd) if initrd is not None else 0, cmdline, 0,
                                       kexec.get_random_bytes, host.printk)
    if dtb is None:
        host.printk.pr_err(f"{PR_FMT}Preparing for new dtb failed")
        return -errno.EINVAL
    fdt_pack(dtb)
    kbuf = KexecBuf(image, bytes(dtb), len(dtb), mem=KEXEC_BUF_MEM_UNKNOWN, memsz=len(dtb),
                    buf_align=SZ_2M, buf_min=buf_min, buf_max=ULONG_MAX, top_down=True)
    ret = kexec.kexec_add_buffer(kbuf)
    if ret:
        return ret
    image.arch = KimageArch(bytes(dtb), kbuf.mem)
    kexec.kexec_dprintk(f"{PR_FMT}Loaded dtb at 0x{kbuf.mem:x} bufsz=0x{kbuf.bufsz:x} memsz=0x{kbuf.memsz:x}")
    return 0
