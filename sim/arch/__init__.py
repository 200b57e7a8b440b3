"""arch/: the one interface generic kernel code calls, and the architectures behind it.

As in the kernel, generic code never asks which architecture it runs on: it calls a
hook, and the base class `Arch` supplies the generic fallback (the ``#ifndef arch_...``
defaults of include/linux/kexec.h and friends) where an architecture has nothing to add.
Each architecture names what it must (`name`, `kexec_file_loaders`) and fails at class
creation when it does not, as the kernel's ``#error KEXEC_ARCH not defined`` does.

The hooks: ``setup_arch`` (memory discovery, early reservations, the KHO transport read
back into the generic ``kho_populate``), ``arch_mm_preinit``,
``setup_params`` (the architecture's early parameters: ``mem=``, x86's ``iommu=``),
``kexec_file_loaders`` (tuple of `KexecFileOps`, walked by kexec_image_probe_default),
``machine_kexec`` (the registers the next kernel starts with) and what user space reads
of the platform (``iomem``, ``platform_files``, ``platform_links``).  Arch state of a loaded image lives in
``Kimage.arch``.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from sim.init.main import Kernel
    from sim.kernel.kexec_file import Kexec, Kimage
    from sim.lib.cmdline import EarlyParam, Setup
    from sim.machine import Machine
    from sim.physmem import PhysMem

from sim.lib.checksum import csum_partial as generic_csum_partial
from sim.mm.memblock import ARCH_LOW_ADDRESS_LIMIT

# Each architecture's name and the module of the board it boots on (its BOARD).
ARCHES = {"x86_64": "sim.arch.x86.q35", "arm64": "sim.arch.arm64.virt"}


@dataclass(frozen=True)
class KexecFileOps:
    """struct kexec_file_ops: probe(kexec, kernel) and load(kexec, image, kernel, initrd, cmdline),
    each returning 0 or -errno, as kexec_file.c calls them."""

    probe: Callable[["Kexec", bytes], int]
    load: Callable[["Kexec", "Kimage", bytes, bytes | None, bytes], int]


class Arch:
    """The architecture of one running kernel; subclasses override the hooks they implement."""

    name: ClassVar[str]
    uname_machine: ClassVar[str]      # utsname.machine, /proc/sys/kernel/arch
    kexec_file_loaders: ClassVar[tuple[KexecFileOps, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for const in ("name", "uname_machine", "kexec_file_loaders"):
            if not hasattr(cls, const):
                raise TypeError(f"{cls.__name__} must define {const}")

    def __init__(self, kernel: "Kernel") -> None:
        self.k = kernel

    def smp_setup_processor_id(self) -> None:
        """Before the banner: generic kernels print nothing."""

    def setup_arch(self) -> None:
        raise NotImplementedError

    @property
    def arch_low_address_limit(self) -> int:
        """ARCH_LOW_ADDRESS_LIMIT: the generic 4 GiB - 1."""
        return ARCH_LOW_ADDRESS_LIMIT

    def arch_mm_preinit(self) -> None:
        """Generic: nothing to set up before the page allocator takes over."""

    def setup_params(self) -> "list[EarlyParam | Setup]":
        """The architecture's early_param / __setup entries (arch/ links first); none by default."""
        return []

    def csum_partial(self, data: bytes, wsum: int) -> int:
        """lib/checksum.c's, unless the architecture has its own (x86_64 does)."""
        return generic_csum_partial(data, wsum)

    def rootfs_initcall(self) -> None:
        """Architecture initcalls that print at boot; none by default."""

    def machine_kexec(self, image: "Kimage") -> tuple[int, int]:
        """After the segments are in place: (entry point, the boot register) the next kernel gets."""
        raise NotImplementedError

    def iomem(self) -> str:
        """/proc/iomem."""
        raise NotImplementedError

    def platform_files(self) -> dict[str, tuple[int, bytes]]:
        """Files user space reads about the platform, path -> (permission bits, content)."""
        return {"/proc/sys/kernel/arch": (0o444, f"{self.uname_machine}\n".encode())}

    def platform_links(self) -> dict[str, str]:
        """Symbolic links user space finds, path -> target; none by default."""
        return {}


class Board:
    """The machine's firmware for one architecture: RAM layout, cold boot, the kernel header it loads."""

    arch: ClassVar[type[Arch]]

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine

    @property
    def ram_end(self) -> int:
        raise NotImplementedError

    def cold_boot(self) -> tuple[int, int]:
        """Put the kernel and what it boots with in RAM: (kernel load address, boot register)."""
        raise NotImplementedError

    def read_kernel_info(self, physmem: "PhysMem", load_addr: int) -> Any:
        """The KernelInfo of the image at load_addr, or None."""
        raise NotImplementedError

    @staticmethod
    def make_image(kernel_version: str, cmdline: str, size: int) -> bytes:
        """A kernel image of this architecture; cmdline is its CONFIG_CMDLINE, size its init size."""
        raise NotImplementedError


def make_kernel_image(arch: str, kernel_version: str = "6.16", cmdline: str = "",
                      size: int = 32 << 20) -> bytes:
    """`khofs mkimage`: an x86_64 bzImage or an arm64 Image of the simulated kernel."""
    return board_class(arch).make_image(kernel_version, cmdline, size)


def board_class(arch: str) -> type[Board]:
    """The board a Machine(arch=...) is: q35 for x86_64, virt for arm64."""
    if arch not in ARCHES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHES)}")
    return importlib.import_module(ARCHES[arch]).BOARD
