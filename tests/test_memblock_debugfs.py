"""The text memblock shows: debugfs memblock/{memory,reserved}, the memblock=debug dump and
trace lines (spec §3), compared byte for byte with hand-computed layouts."""

import pytest
from memblock_common import MEM_SIZE, B, new_memblock

from sim.kernel.panic import KernelPanic
from sim.mm.memblock import (
    INIT_MEMBLOCK_REGIONS,
    MEMBLOCK_DRIVER_MANAGED,
    MEMBLOCK_HOTPLUG,
    MEMBLOCK_MIRROR,
    MEMBLOCK_NOMAP,
    MEMBLOCK_NONE,
    MEMBLOCK_RSRV_KERN,
    MEMBLOCK_RSRV_NOINIT,
    NUMA_NO_NODE,
    Memblock,
)
from sim.sizes import SZ_1M


def layout(mb: Memblock) -> None:
    """A small x86-like map: low RAM, RAM above 1M, a few reservations."""
    mb.add_node(0x1000, 0x9E000, 0, MEMBLOCK_NONE)
    mb.add(0x100000, 0x7FE00000)
    mb.reserve(0x0, 0x1000)
    mb._reserve(0x9F000, 0x61000, NUMA_NO_NODE, MEMBLOCK_RSRV_NOINIT | MEMBLOCK_RSRV_KERN)
    mb._reserve(0x1000000, 0x100000, 0, MEMBLOCK_RSRV_KERN)
    mb.reserve_kern(0x7FF00000, 0x100000)


# ---- debugfs -----------------------------------------------------------------------------------

def test_debugfs_numa() -> None:
    mb = new_memblock(numa=True)
    layout(mb)
    assert mb.debugfs_show(mb.memory) == (
        "   0: 0x0000000000001000..0x000000000009efff    0 NONE\n"
        "   1: 0x0000000000100000..0x000000007fefffff    x NONE\n"
    )
    assert mb.debugfs_show(mb.reserved) == (
        "   0: 0x0000000000000000..0x0000000000000fff    x NONE\n"
        "   1: 0x000000000009f000..0x00000000000fffff    x RSV_NIT\n"
        "   2: 0x0000000001000000..0x00000000010fffff    0 RSV_KERN\n"
        "   3: 0x000000007ff00000..0x000000007fffffff    x RSV_KERN\n"
    )


def test_debugfs_uma_prints_node_zero() -> None:
    mb = new_memblock(numa=False)
    layout(mb)
    assert mb.debugfs_show(mb.memory) == (
        "   0: 0x0000000000001000..0x000000000009efff    0 NONE\n"
        "   1: 0x0000000000100000..0x000000007fefffff    0 NONE\n"
    )
    assert mb.debugfs_show(mb.reserved).splitlines()[3] == (
        "   3: 0x000000007ff00000..0x000000007fffffff    0 RSV_KERN")


def test_debugfs_flag_names_lowest_bit_wins() -> None:
    mb = new_memblock(numa=True)
    mb.add_node(0x100000, 0x100000, 12, MEMBLOCK_HOTPLUG | MEMBLOCK_NOMAP)
    mb.add_node(0x300000, 0x100000, 1, MEMBLOCK_MIRROR | MEMBLOCK_DRIVER_MANAGED)
    mb.add_node(0x500000, 0x100000, 1, MEMBLOCK_NOMAP)
    mb.add_node(0x700000, 0x100000, 1, MEMBLOCK_DRIVER_MANAGED)
    mb.add_node(0x900000, 0x100000, 1, MEMBLOCK_NONE)
    mb.mark_kho_scratch(0x900000, 0x100000)
    mb.add_node(0xB00000, 0x100000, 1, 0x80)
    assert mb.debugfs_show(mb.memory) == (
        "   0: 0x0000000000100000..0x00000000001fffff   12 HOTPLUG\n"
        "   1: 0x0000000000300000..0x00000000003fffff    1 MIRROR\n"
        "   2: 0x0000000000500000..0x00000000005fffff    1 NOMAP\n"
        "   3: 0x0000000000700000..0x00000000007fffff    1 DRV_MNG\n"
        "   4: 0x0000000000900000..0x00000000009fffff    1 KHO_SCRATCH\n"
        "   5: 0x0000000000b00000..0x0000000000bfffff    1 UNKNOWN\n"
    )


def test_debugfs_empty_type_prints_nothing() -> None:
    mb = new_memblock()
    assert mb.debugfs_show(mb.memory) == ""
    mb.reserve(0x1000, 0x1000)
    mb.phys_free(0x1000, 0x1000)
    assert mb.debugfs_show(mb.reserved) == ""


# ---- memblock=debug dump -----------------------------------------------------------------------

def test_dump_all_numa() -> None:
    mb = new_memblock(numa=True)
    mb.add_node(0x1000, 0x9E000, 0, MEMBLOCK_NONE)
    mb.add(0x100000, 0x7FE00000)
    mb.reserve_kern(0x7FF00000, 0x100000)
    assert mb.dump_all() == (
        "MEMBLOCK configuration:\n"
        " memory size = 0x000000007fe9e000 reserved size = 0x0000000000100000\n"
        " memory.cnt  = 0x2\n"
        " memory[0]\t[0x0000000000001000-0x000000000009efff], 0x000000000009e000 bytes on node 0 flags: 0\n"
        " memory[0x1]\t[0x0000000000100000-0x000000007fefffff], 0x000000007fe00000 bytes flags: 0\n"
        " reserved.cnt  = 0x1\n"
        " reserved[0]\t[0x000000007ff00000-0x000000007fffffff], 0x0000000000100000 bytes flags: 0x20\n"
    )


def test_dump_all_uma_has_no_node() -> None:
    mb = new_memblock(numa=False)
    mb.add_node(0x1000, 0x9E000, 0, MEMBLOCK_HOTPLUG)
    assert mb.dump_all().splitlines()[3] == (
        " memory[0]\t[0x0000000000001000-0x000000000009efff], 0x000000000009e000 bytes flags: 0x1")


def test_dump_all_empty() -> None:
    assert new_memblock().dump_all() == (
        "MEMBLOCK configuration:\n"
        " memory size = 0x0000000000000000 reserved size = 0x0000000000000000\n"
        " memory.cnt  = 0x0\n"
        " reserved.cnt  = 0x0\n"
    )


def test_dump_all_hex_index() -> None:
    mb = new_memblock(numa=True)
    for i in range(11):
        mb.add_node(SZ_1M * (2 * i + 1), SZ_1M, i, MEMBLOCK_NONE)
    assert mb.dump_all().splitlines()[13] == (
        " memory[0xa]\t[0x0000000001500000-0x00000000015fffff], 0x0000000000100000 bytes on node 10 flags: 0")


# ---- trace lines -------------------------------------------------------------------------------

def debug_memblock(*, debug: bool = True) -> tuple[Memblock, list[str]]:
    mb = new_memblock()
    log: list[str] = []
    mb.printk = log.append
    mb.memblock_debug = debug
    return mb, log


def test_trace_add_remove_reserve_free() -> None:
    mb, log = debug_memblock()
    mb.add(0x1000, 0x9E000)
    mb.add_node(0x100000, 0x100000, 1, MEMBLOCK_HOTPLUG)
    mb.reserve(0x1000, 0x1000)
    mb.reserve_kern(0x2000, 0x1000)
    mb.remove(0x100000, 0x1000)
    mb.phys_free(0x1000, 0x1000)
    mb.free(0x2000, 0x1000)
    me = "test_trace_add_remove_reserve_free+0x0/0x0"
    assert log == [
        f"memblock_add: [0x0000000000001000-0x000000000009efff] {me}\n",
        f"memblock_add_node: [0x0000000000100000-0x00000000001fffff] nid=1 flags=1 {me}\n",
        f"__memblock_reserve: [0x0000000000001000-0x0000000000001fff] nid=-1 flags=0 {me}\n",
        f"__memblock_reserve: [0x0000000000002000-0x0000000000002fff] nid=-1 flags=20 {me}\n",
        f"memblock_remove: [0x0000000000100000-0x0000000000100fff] {me}\n",
        f"memblock_phys_free: [0x0000000000001000-0x0000000000001fff] {me}\n",
        f"memblock_phys_free: [0x0000000000002000-0x0000000000002fff] {me}\n",
    ]


def reserve_real_mode(mb: Memblock) -> None:
    """Named like the kernel caller the trace line should name."""
    mb.reserve(0x98000, 0x8000)


def test_trace_names_the_caller() -> None:
    mb, log = debug_memblock()
    reserve_real_mode(mb)
    assert log == ["__memblock_reserve: [0x0000000000098000-0x000000000009ffff] nid=-1 flags=0 "
                   "reserve_real_mode+0x0/0x0\n"]


def test_trace_allocations() -> None:
    mb, log = debug_memblock()
    mb.add_node(B, MEM_SIZE, 0, MEMBLOCK_NONE)
    log.clear()
    me = "test_trace_allocations+0x0/0x0"
    a = mb.phys_alloc(0x1000, 0x1000)
    b = mb.alloc(64, 32)
    c = mb.alloc_raw(64, 0x40)
    d = mb.alloc_low(32, 32)
    e = mb.alloc_exact_nid_raw(32, 32, B, B + MEM_SIZE, 0)
    assert log == [
        f"memblock_phys_alloc_range: 4096 bytes align=0x1000 from=0x0000000000000000 "
        f"max_addr=0x0000000000000000 {me}\n",
        f"__memblock_reserve: [{a:#018x}-{a + 0xFFF:#018x}] nid=-1 flags=20 {me}\n",
        f"memblock_alloc_try_nid: 64 bytes align=0x20 nid=-1 from=0x0000000000000000 "
        f"max_addr=0x0000000000000000 {me}\n",
        f"__memblock_reserve: [{b:#018x}-{b + 63:#018x}] nid=-1 flags=20 {me}\n",
        f"memblock_alloc_try_nid_raw: 64 bytes align=0x40 nid=-1 from=0x0000000000000000 "
        f"max_addr=0x0000000000000000 {me}\n",
        f"__memblock_reserve: [{c:#018x}-{c + 63:#018x}] nid=-1 flags=20 {me}\n",
        f"memblock_alloc_try_nid: 32 bytes align=0x20 nid=-1 from=0x0000000000000000 "
        f"max_addr=0x0000000040004000 {me}\n",
        f"__memblock_reserve: [{d:#018x}-{d + 31:#018x}] nid=-1 flags=20 {me}\n",
        f"memblock_alloc_exact_nid_raw: 32 bytes align=0x20 nid=0 from=0x0000000040000000 "
        f"max_addr=0x0000000040008000 {me}\n",
        f"__memblock_reserve: [{e:#018x}-{e + 31:#018x}] nid=0 flags=20 {me}\n",
    ]


def test_no_trace_without_memblock_debug() -> None:
    mb, log = debug_memblock(debug=False)
    mb.allow_resize()
    mb.add(B, MEM_SIZE)
    mb.reserve(B, 0x100)
    assert mb.alloc(64, 32)
    for i in range(INIT_MEMBLOCK_REGIONS):  # doubling is silent too
        mb.reserve(SZ_1M + 2 * i * 0x100, 0x100)
    assert mb.reserved.max == 2 * INIT_MEMBLOCK_REGIONS
    mb.phys_free(B, 0x100)
    mb.remove(B, 0x100)
    assert log == []


def test_trace_doubling() -> None:
    mb, log = debug_memblock()
    mb.allow_resize()
    mb.add(B, MEM_SIZE)
    for i in range(INIT_MEMBLOCK_REGIONS):
        mb.reserve(SZ_1M + 2 * i * 0x100, 0x100)
    log.clear()
    mb.reserve(SZ_1M + 2 * INIT_MEMBLOCK_REGIONS * 0x100, 0x100)
    me = "test_trace_doubling+0x0/0x0"
    # 256 entries of 24 bytes: 0x1800 bytes used, two pages reserved, at the top of memory.
    assert log == [
        f"__memblock_reserve: [0x0000000000110000-0x00000000001100ff] nid=-1 flags=0 {me}\n",
        "memblock: reserved is doubled to 256 at [0x0000000040006000-0x00000000400077ff]",
        f"__memblock_reserve: [0x0000000040006000-0x0000000040007fff] nid=-1 flags=20 {me}\n",
    ]


def test_failed_doubling_is_logged_and_fails() -> None:
    """No free memory for a bigger array: pr_err (shown without memblock=debug) and -ENOMEM."""
    mb, log = debug_memblock(debug=False)
    mb.allow_resize()
    for i in range(INIT_MEMBLOCK_REGIONS):
        mb.reserve(SZ_1M + 2 * i * 0x100, 0x100)
    assert mb.reserve(SZ_1M + 2 * INIT_MEMBLOCK_REGIONS * 0x100, 0x100) == -12
    assert log == ["memblock: Failed to double reserved array from 128 to 256 entries !\n"]
    assert mb.reserved.cnt == INIT_MEMBLOCK_REGIONS
    assert mb.reserved.max == INIT_MEMBLOCK_REGIONS


def test_cap_memory_range_without_memory_warns() -> None:
    mb, log = debug_memblock(debug=False)
    mb.cap_memory_range(0, SZ_1M)
    assert log == ["memblock_cap_memory_range: No memory registered yet\n"]


def test_alloc_or_panic_names_the_caller() -> None:
    mb = new_memblock()
    with pytest.raises(KernelPanic, match=r"^test_alloc_or_panic_names_the_caller: Failed to allocate "
                                          r"0x0000000000000040 bytes$"):
        mb.alloc_or_panic(64, 32)
    mb.add(B, MEM_SIZE)
    addr = mb.alloc_or_panic(64, 32)
    assert (mb.reserved.regions[0].base, mb.reserved.regions[0].flags) == (addr, MEMBLOCK_RSRV_KERN)
