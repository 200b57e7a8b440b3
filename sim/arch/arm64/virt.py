"""QEMU's ``virt`` board for arm64 (-M virt -cpu cortex-a57 -kernel Image [-initrd F] [-numa ...]).

RAM starts at 0x40000000.  NUMA nodes take RAM in address order in equal shares (the
last takes the rest), each a ``memory@ADDR`` node with its ``numa-node-id``, and a
``distance-map`` gives 10 within a node and 20 across.  QEMU's direct kernel boot
(hw/arm/boot.c) puts the Image at RAM + 2 MiB (text_offset 0), an initrd at RAM +
min(RAM / 2, 128 MiB) (above the kernel), and the DTB 2 MiB-aligned after the initrd,
with ``/chosen`` holding ``bootargs`` (when there is a command line), the initrd
range, ``kaslr-seed`` and ``rng-seed``.  The tree is the part of QEMU's the kernel's
memory and KHO code read (devices such as the GIC and UART are left out); the kernel
starts with x0 = the DTB's address.
"""

import struct
from typing import TYPE_CHECKING

from sim.arch import Board
from sim.arch.arm64.boot.image import make_image, read_image_info
from sim.arch.arm64.kernel.setup import Arm64
from sim.arch.x86.boot.bzimage import KernelInfo
from sim.lib.fdt import FdtSw
from sim.physmem import PhysMem
from sim.sizes import PAGE_SIZE, SZ_2M, SZ_128M, round_up

if TYPE_CHECKING:
    from sim.machine import Machine

VIRT_MEM_BASE = 0x40000000
KERNEL_OFFSET = SZ_2M
VIRT_MODEL = "linux,dummy-virt"
QEMU_RNG_SEED_SIZE = 32
LOCAL_DISTANCE, REMOTE_DISTANCE = 10, 20


class Virt(Board):
    """The virt board: RAM, its DT and QEMU's direct kernel boot."""

    arch = Arm64

    def __init__(self, machine: "Machine") -> None:
        super().__init__(machine)
        share = machine.mem // machine.nodes
        # (start, end, nid) of each node's memory, as the -numa options lay it out.
        self.node_mem = [(VIRT_MEM_BASE + nid * share,
                          VIRT_MEM_BASE + (machine.mem if nid == machine.nodes - 1 else (nid + 1) * share),
                          nid) for nid in range(machine.nodes)]

    @property
    def ram_end(self) -> int:
        return VIRT_MEM_BASE + self.machine.mem

    def dtb(self, initrd: tuple[int, int] | None) -> bytes:
        m = self.machine
        sw = FdtSw(64 * 1024)
        numa = m.nodes > 1
        sw.finish_reservemap()
        sw.begin_node("")
        sw.property_u32("#address-cells", 2)
        sw.property_u32("#size-cells", 2)
        sw.property_string("compatible", VIRT_MODEL)
        sw.property_string("model", VIRT_MODEL)
        sw.begin_node("chosen")
        if m.cmdline:
            sw.property_string("bootargs", m.cmdline)
        if initrd is not None:
            sw.property_u64("linux,initrd-start", initrd[0])
            sw.property_u64("linux,initrd-end", initrd[1])
        sw.property_u64("kaslr-seed", m.rng.getrandbits(64))
        sw.property("rng-seed", m.rng.randbytes(QEMU_RNG_SEED_SIZE))
        sw.end_node()
        for start, end, nid in self.node_mem:
            sw.begin_node(f"memory@{start:x}")
            sw.property_string("device_type", "memory")
            sw.property("reg", struct.pack(">QQ", start, end - start))
            if numa:
                sw.property_u32("numa-node-id", nid)
            sw.end_node()
        sw.begin_node("cpus")
        sw.property_u32("#address-cells", 1)
        sw.property_u32("#size-cells", 0)
        sw.begin_node("cpu@0")
        sw.property_string("device_type", "cpu")
        sw.property_string("compatible", "arm,cortex-a57")
        sw.property_u32("reg", 0)
        if numa:
            sw.property_u32("numa-node-id", 0)
        sw.end_node()
        sw.end_node()
        if numa:
            sw.begin_node("distance-map")
            sw.property_string("compatible", "numa-distance-map-v1")
            matrix = [v for i in range(m.nodes) for j in range(m.nodes)
                      for v in (i, j, LOCAL_DISTANCE if i == j else REMOTE_DISTANCE)]
            sw.property("distance-matrix", struct.pack(f">{len(matrix)}I", *matrix))
            sw.end_node()
        sw.end_node()
        err = sw.finish()
        if err:
            raise RuntimeError(f"virt: building the device tree failed: {err}")
        return bytes(sw.buf[:sw.totalsize()])

    def cold_boot(self) -> tuple[int, int]:
        m = self.machine
        image = make_image(m.kernel_version, "", m.kernel_size)
        load_addr = VIRT_MEM_BASE + KERNEL_OFFSET
        m.physmem.write(load_addr, image)
        initrd_start = max(VIRT_MEM_BASE + min(m.mem // 2, SZ_128M),
                           round_up(load_addr + m.kernel_size, PAGE_SIZE))
        initrd = None
        if m.initrd:
            m.physmem.write(initrd_start, m.initrd)
            initrd = (initrd_start, initrd_start + len(m.initrd))
        dtb_addr = round_up(initrd_start + (len(m.initrd) if m.initrd else 0), SZ_2M)
        m.physmem.write(dtb_addr, self.dtb(initrd))
        return load_addr, dtb_addr

    def read_kernel_info(self, physmem: PhysMem, load_addr: int) -> KernelInfo | None:
        return read_image_info(physmem, load_addr)

    @staticmethod
    def make_image(kernel_version: str, cmdline: str, size: int) -> bytes:
        return make_image(kernel_version, cmdline, size)


BOARD = Virt
