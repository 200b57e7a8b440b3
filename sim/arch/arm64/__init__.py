"""arch/arm64: the arm64 kernel (DT boot, Image kexec loader) and QEMU's virt board."""

from sim.arch.arm64.virt import Virt

BOARD = Virt
