"""The simulated machine: RAM, firmware tables and the kernel currently running on it.

The machine outlives its kernels.  A kernel is constructed from what hardware
hands over — physical memory, the NUMA description firmware publishes, and the
two registers a boot loader or ``machine_kexec`` leaves behind (kernel load
address, and boot_params on x86_64 or the DTB on arm64) — and from nothing else.
This is what makes a kexec in the simulator honest: state reaches the next kernel
only through RAM.  ``arch`` picks the board (sim.arch): q35 for x86_64, QEMU virt
for arm64 (sim.arch.x86.q35, sim.arch.arm64.virt).
"""

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from sim.arch import ARCHES, board_class
from sim.init.main import Kernel
from sim.kernel.module import ModuleSource
from sim.kho_sanitizer import KhoSanitizer
from sim.lib.cmdline import memparse
from sim.mm.memblock import MAX_NUMNODES
from sim.physmem import PhysMem
from sim.sizes import SZ_1M, SZ_32M


def _size(value: int | str) -> int:
    if isinstance(value, int):
        return value
    size, rest = memparse(value)
    if rest or size <= 0:
        raise ValueError(f"not a size: {value!r}")
    return size


class Machine:
    """A box with RAM and firmware; `boot()` cold-boots it, `kexec()` reboots into the loaded image."""

    def __init__(self, mem: int | str = "8G", nodes: int = 2, cmdline: str = "",
                 kernel_version: str = "6.16", scrub: bool = False, test_kho: bool = False,
                 kernel_size: int | str = SZ_32M, initrd: bytes | None = None, seed: int = 0,
                 kho_sanitizer: bool = False,
                 modules: Sequence[str | Path | ModuleType] = (), arch: str = "x86_64") -> None:
        if arch not in ARCHES:
            raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHES)}")
        self.arch = arch
        self.mem = _size(mem)
        if not 1 <= nodes <= MAX_NUMNODES:
            raise ValueError(f"{nodes} NUMA nodes: the kernel supports 1 to {MAX_NUMNODES}")
        if self.mem // nodes < 128 * SZ_1M:
            raise ValueError(f"{nodes} NUMA nodes need at least 128 MiB of RAM each")
        self.nodes = nodes
        self.cmdline = cmdline
        self.kernel_version = kernel_version
        self.kernel_size = _size(kernel_size)
        self.initrd = initrd
        # Simulator knobs, not kernel state: poison reusable memory; build every kernel
        # with CONFIG_TEST_KEXEC_HANDOVER.
        self.scrub = scrub
        self.test_kho = test_kho
        # KHO users built into every kernel of this machine (FILE.py paths or imported modules).
        self.modules = [ModuleSource.load(module) for module in modules]
        # The board: q35 for x86_64, virt for arm64 (sim.arch): RAM layout, firmware, cold boot.
        self.board = board_class(arch)(self)
        self.physmem = PhysMem(self.board.ram_end)
        # One CPU (QEMU's default -smp 1): it sizes the swiotlb areas.
        self.nr_cpus = 1
        # The hardware random number generator (get_random_u32 and friends).
        self.rng = random.Random(seed)
        # A khofs instrument outside the simulated kernels: it records what each kernel truly
        # preserved and reports misuse in the next one; no kernel ever reads it.
        self.kho_sanitizer = KhoSanitizer() if kho_sanitizer else None
        self.kernel: Kernel | None = None
        self.generation = 0
        # Set by reboot(2)'s halt and power-off: the last kernel stays for its log, nothing runs.
        self.halted = False

    def boot(self) -> Kernel:
        """Power on: firmware and boot loader put the kernel, its command line and boot data in RAM."""
        load_addr, boot_params = self.board.cold_boot()
        self.generation = 0
        self.halted = False
        return self._start(load_addr, boot_params)

    def kexec(self, fault: Callable[[PhysMem, int], None] | None = None) -> Kernel:
        """reboot(LINUX_REBOOT_CMD_KEXEC): the old kernel copies the image in place and jumps.

        `fault` (fault injection, for fuzzers and tests) runs between the copy and the jump
        with RAM and the boot_params address: what it writes is what the new kernel finds.
        """
        if self.kernel is None:
            raise RuntimeError("the machine has not been booted")
        scratch = [(a.addr, a.addr + a.size) for a in self.kernel.kho.kho_scratch]
        load_addr, boot_params = self.kernel.machine_kexec()
        if self.kho_sanitizer is not None:
            self.kho_sanitizer.kexec(scratch)
        self.kernel = None
        self.generation += 1
        if fault is not None:
            fault(self.physmem, boot_params)
        return self._start(load_addr, boot_params)

    def _start(self, load_addr: int, boot_params: int) -> Kernel:
        info = self.board.read_kernel_info(self.physmem, load_addr)
        if info is None:
            raise RuntimeError(f"no bootable kernel at {load_addr:#x}")
        self.kernel = Kernel(self, info, load_addr, boot_params)
        self.kernel.start_kernel()
        return self.kernel
