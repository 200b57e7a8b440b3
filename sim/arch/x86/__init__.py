"""arch/x86: the x86_64 kernel (setup_arch, bzImage64 kexec loader, purgatory hand-off) and the q35 board.

The x86 boot steps still live on `sim.kernel.Kernel` and the bzImage64 loader on
`sim.kexec.Kexec`; this module is the boundary generic code calls through.
"""

from typing import TYPE_CHECKING, ClassVar

from sim.arch import Arch, Board, KexecFileOps
from sim.bzimage import KernelInfo, bzImage64_probe, make_bzimage, read_kernel_info
from sim.kernel import early
from sim.kexec import Kexec, Kimage, read_entry64_regs, write_cold_boot
from sim.machine import numa_memblks, q35_e820, ram_spans, write_bios_data_area
from sim.physmem import PhysMem

if TYPE_CHECKING:
    from sim.machine import Machine


def _bzImage64_probe(kexec: Kexec, kernel: bytes) -> int:
    return bzImage64_probe(kernel, kexec.host.printk)


class X86(Arch):
    """x86_64: boot_params and setup_data carry the hand-over (SETUP_KEXEC_KHO)."""

    name = "x86_64"
    uname_machine = "x86_64"
    kexec_file_loaders: ClassVar[tuple[KexecFileOps, ...]] = (
        KexecFileOps(_bzImage64_probe, Kexec.bzImage64_load),)

    def setup_arch(self) -> None:
        self.k.setup_arch()

    def arch_mm_preinit(self) -> None:
        self.k.arch_mm_preinit()

    def early_mem(self, p: str | None) -> int:
        return early(self.k.parse_memopt)(p)

    def rootfs_initcall(self) -> None:
        self.k.pci_iommu_init()

    def machine_kexec(self, image: Kimage) -> tuple[int, int]:
        """Purgatory's entry64_regs, now in RAM: rip - 0x200 is the kernel, rsi the boot_params."""
        regs = read_entry64_regs(self.k.physmem, image.start)
        return regs["rip"] - 0x200, regs["rsi"]

    def iomem(self) -> str:
        return self.k.e820_iomem()


class Q35(Board):
    """QEMU's q35 PC with SeaBIOS: the e820 map, the SRAT, the BIOS data area, a bzImage boot."""

    arch = X86

    def __init__(self, machine: "Machine") -> None:
        super().__init__(machine)
        self.e820 = q35_e820(self.machine.mem)
        self.srat = numa_memblks(self.machine.mem, self.machine.nodes)

    @property
    def ram_end(self) -> int:
        return ram_spans(self.machine.mem)[-1][1]

    def cold_boot(self) -> tuple[int, int]:
        m = self.machine
        write_bios_data_area(m.physmem)
        return write_cold_boot(m.physmem, self.e820, m.cmdline, m.kernel_version, m.kernel_size,
                               initrd=m.initrd)

    def read_kernel_info(self, physmem: PhysMem, load_addr: int) -> KernelInfo | None:
        return read_kernel_info(physmem, load_addr)

    @staticmethod
    def make_image(kernel_version: str, cmdline: str, size: int) -> bytes:
        return make_bzimage(kernel_version, cmdline, size)


BOARD = Q35
