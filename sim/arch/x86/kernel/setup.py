"""arch/x86/kernel: the x86_64 hooks generic code calls (setup_arch, bzImage64 kexec loader, purgatory).

The bzImage64 loader is kexec_bzimage64.py beside this file; the x86 boot steps themselves
(e820, setup_data, the real-mode trampoline, swiotlb's detection) still live on
`sim.init.main.Kernel`, and this class is the boundary generic code calls them through.
"""

from typing import ClassVar

from sim.arch import Arch, KexecFileOps
from sim.arch.x86.boot.bzimage import bzImage64_probe
from sim.arch.x86.kernel.kexec_bzimage64 import bzImage64_load, read_entry64_regs
from sim.arch.x86.lib.csum_partial_64 import csum_partial
from sim.init.main import early
from sim.kernel.kexec_file import Kexec, Kimage
from sim.lib.cmdline import EarlyParam, Setup


def _bzImage64_probe(kexec: Kexec, kernel: bytes) -> int:
    return bzImage64_probe(kernel, kexec.host.printk)


class X86(Arch):
    """x86_64: boot_params and setup_data carry the hand-over (SETUP_KEXEC_KHO)."""

    name = "x86_64"
    uname_machine = "x86_64"
    kexec_file_loaders: ClassVar[tuple[KexecFileOps, ...]] = (
        KexecFileOps(_bzImage64_probe, bzImage64_load),)

    def setup_arch(self) -> None:
        self.k.setup_arch()

    def arch_mm_preinit(self) -> None:
        self.k.arch_mm_preinit()

    def setup_params(self) -> list[EarlyParam | Setup]:
        """arch/x86: mem= trims the e820 map, iommu= decides swiotlb; apic, noapic and earlyprintk
        are taken and not modelled."""
        return [EarlyParam("mem", early(self.k.parse_memopt)), EarlyParam("iommu", self.k.iommu_setup),
                *(EarlyParam(name, lambda _p: 0) for name in ("apic", "earlyprintk", "noapic"))]

    def csum_partial(self, data: bytes, wsum: int) -> int:
        return csum_partial(data, wsum)

    def rootfs_initcall(self) -> None:
        self.k.pci_iommu_init()

    def machine_kexec(self, image: Kimage) -> tuple[int, int]:
        """Purgatory's entry64_regs, now in RAM: rip - 0x200 is the kernel, rsi the boot_params."""
        regs = read_entry64_regs(self.k.physmem, image.start)
        return regs["rip"] - 0x200, regs["rsi"]

    def iomem(self) -> str:
        return self.k.e820_iomem()


