"""The simulated machine: RAM, firmware tables and the kernel currently running on it.

The machine outlives its kernels.  A kernel is constructed from what hardware
hands over — physical memory, the NUMA description firmware publishes, and the
two registers a boot loader or ``machine_kexec`` leaves behind (kernel load
address, and boot_params on x86_64 or the DTB on arm64) — and from nothing else.
This is what makes a kexec in the simulator honest: state reaches the next kernel
only through RAM.  ``arch`` picks the board (sim.arch): q35 for x86_64, QEMU virt
for arm64 (sim.arch.arm64.virt).

x86_64 firmware map (QEMU q35 style, see README "The machine model"):
  usable [0, 0x9fc00), reserved [0x9fc00, 0xa0000) and [0xf0000, 0x100000),
  usable [1 MiB, lowmem) with lowmem = 2 GiB, or all RAM when RAM < 2.75 GiB,
  the rest of RAM from 4 GiB up.  NUMA nodes take RAM in address order in
  equal shares of the RAM size.
"""

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from sim.arch import ARCHES, board_class
from sim.bootparam import E820_TYPE_RAM, E820_TYPE_RESERVED, E820Entry
from sim.cmdline import memparse
from sim.kernel import Kernel
from sim.kho_sanitizer import KhoSanitizer
from sim.memblock import MAX_NUMNODES
from sim.module import ModuleSource
from sim.physmem import PhysMem
from sim.sizes import SZ_1M, SZ_2G, SZ_4G, SZ_32M

# QEMU q35 keeps all RAM below 4 GiB unless there is at least this much.
Q35_LOWMEM_THRESHOLD = 0xB0000000
# SeaBIOS puts the 1 KiB extended BIOS data area at the top of base memory (an e820 hole).
Q35_EBDA = 0x9FC00
# The BIOS data area words the kernel reads back (arch/x86/kernel/ebda.c, asm/bios_ebda.h).
BDA_EBDA_SEGMENT = 0x40E
BDA_BASE_MEM_KB = 0x413


@dataclass(frozen=True)
class NumaMemblk:
    """One SRAT memory affinity entry: [start, end) belongs to nid."""

    start: int
    end: int
    nid: int


def _size(value: int | str) -> int:
    if isinstance(value, int):
        return value
    size, rest = memparse(value)
    if rest or size <= 0:
        raise ValueError(f"not a size: {value!r}")
    return size


def _q35_lowmem(mem: int) -> int:
    """How much of the RAM q35 maps below 4 GiB."""
    return SZ_2G if mem >= Q35_LOWMEM_THRESHOLD else mem


def q35_e820(mem: int) -> list[E820Entry]:
    """The firmware memory map QEMU's q35 machine reports for `mem` bytes of RAM."""
    lowmem = _q35_lowmem(mem)
    table = [
        E820Entry(0, Q35_EBDA, E820_TYPE_RAM),
        E820Entry(Q35_EBDA, 0xA0000 - Q35_EBDA, E820_TYPE_RESERVED),
        E820Entry(0xF0000, 0x100000 - 0xF0000, E820_TYPE_RESERVED),
        E820Entry(SZ_1M, lowmem - SZ_1M, E820_TYPE_RAM),
    ]
    if mem > lowmem:
        table.append(E820Entry(SZ_4G, mem - lowmem, E820_TYPE_RAM))
    return table


def write_bios_data_area(physmem: PhysMem) -> None:
    """What SeaBIOS leaves in the BDA: the EBDA's segment and the base memory size in KiB."""
    physmem.write(BDA_EBDA_SEGMENT, struct.pack("<H", Q35_EBDA >> 4))
    physmem.write(BDA_BASE_MEM_KB, struct.pack("<H", Q35_EBDA >> 10))


def ram_spans(mem: int) -> list[tuple[int, int]]:
    """Address spans RAM occupies ([0, lowmem) and [4 GiB, ...)), legacy holes included."""
    lowmem = _q35_lowmem(mem)
    spans = [(0, lowmem)]
    if mem > lowmem:
        spans.append((SZ_4G, SZ_4G + mem - lowmem))
    return spans


def numa_memblks(mem: int, nodes: int) -> list[NumaMemblk]:
    """SRAT: node i owns the i-th share of RAM, counted in address order."""
    share = mem // nodes
    blks: list[NumaMemblk] = []
    nid, left = 0, share
    for start, end in ram_spans(mem):
        while start < end:
            take = end - start if nid == nodes - 1 else min(left, end - start)
            blks.append(NumaMemblk(start, start + take, nid))
            start += take
            left -= take
            if left == 0 and nid < nodes - 1:
                nid, left = nid + 1, share
    return blks


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

    def kexec(self) -> Kernel:
        """reboot(LINUX_REBOOT_CMD_KEXEC): the old kernel copies the image in place and jumps."""
        if self.kernel is None:
            raise RuntimeError("the machine has not been booted")
        scratch = [(a.addr, a.addr + a.size) for a in self.kernel.kho.kho_scratch]
        load_addr, boot_params = self.kernel.machine_kexec()
        if self.kho_sanitizer is not None:
            self.kho_sanitizer.kexec(scratch)
        self.kernel = None
        self.generation += 1
        return self._start(load_addr, boot_params)

    def _start(self, load_addr: int, boot_params: int) -> Kernel:
        info = self.board.read_kernel_info(self.physmem, load_addr)
        if info is None:
            raise RuntimeError(f"no bootable kernel at {load_addr:#x}")
        self.kernel = Kernel(self, info, load_addr, boot_params)
        self.kernel.start_kernel()
        return self.kernel
