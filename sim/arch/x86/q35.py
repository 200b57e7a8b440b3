"""QEMU's q35 PC with SeaBIOS, the x86_64 board (see README "The machine model").

Firmware map: usable [0, 0x9fc00), reserved [0x9fc00, 0xa0000) and [0xf0000, 0x100000),
usable [1 MiB, lowmem) with lowmem = 2 GiB, or all RAM when RAM < 2.75 GiB, the rest of
RAM from 4 GiB up.  NUMA nodes take RAM in address order in equal shares of the RAM size
(the SRAT).  A cold boot loads a bzImage at 16 MiB with boot_params below 1 MiB.
"""

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sim.arch import Board
from sim.arch.x86.boot.bzimage import KernelInfo, make_bzimage, read_kernel_info
from sim.arch.x86.bootparam import E820_TYPE_RAM, E820_TYPE_RESERVED, E820Entry
from sim.arch.x86.kernel.kexec_bzimage64 import write_cold_boot
from sim.arch.x86.kernel.setup import X86
from sim.physmem import PhysMem
from sim.sizes import SZ_1M, SZ_2G, SZ_4G

if TYPE_CHECKING:
    from sim.machine import Machine

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
