"""The machine model and the cold-boot path (issue 3 item 1): every number derived by hand.

The derivations follow the README's "The machine model": a QEMU q35 e820 map, NUMA nodes
taking RAM in address order in equal shares, the kernel image at 16 MiB (32 MiB), the first
MiB reserved, a 64-byte struct page per page allocated per node per 128 MiB section from the
top of the node, then KHO's scratch: 200% of RSRV_KERN memory by default (spec kho.md §5).
"""

import re

import pytest

from sim.bootparam import E820_TYPE_RAM, E820_TYPE_RESERVED, E820Entry
from sim.machine import Machine, NumaMemblk, numa_memblks, q35_e820

M = 1 << 20
G = 1 << 30


def lines(k, path: str) -> list[str]:
    return k.debugfs.read(path).decode().splitlines()


def scratch(k) -> list[tuple[int, int]]:
    phys = [int(x, 16) for x in lines(k, "kho/out/scratch_phys")]
    size = [int(x, 16) for x in lines(k, "kho/out/scratch_len")]
    return list(zip(phys, size, strict=True))


@pytest.fixture(scope="module")
def k8() -> object:
    return Machine(mem="8G", nodes=2, cmdline="kho=on").boot()


@pytest.fixture(scope="module")
def k2() -> object:
    return Machine(mem="2G", nodes=1, cmdline="kho=on").boot()


def test_q35_e820_8g_splits_ram_at_2g_and_4g() -> None:
    assert q35_e820(8 * G) == [
        E820Entry(0, 0x9FC00, E820_TYPE_RAM),
        E820Entry(0x9FC00, 0x400, E820_TYPE_RESERVED),
        E820Entry(0xF0000, 0x10000, E820_TYPE_RESERVED),
        E820Entry(M, 2 * G - M, E820_TYPE_RAM),
        E820Entry(4 * G, 6 * G, E820_TYPE_RAM),
    ]


def test_q35_e820_below_2_75g_keeps_all_ram_low() -> None:
    assert q35_e820(2 * G)[-1] == E820Entry(M, 2 * G - M, E820_TYPE_RAM)
    assert q35_e820(0xB0000000)[-1] == E820Entry(4 * G, 0xB0000000 - 2 * G, E820_TYPE_RAM)


def test_numa_nodes_take_equal_shares_in_address_order() -> None:
    assert numa_memblks(8 * G, 2) == [
        NumaMemblk(0, 2 * G, 0), NumaMemblk(4 * G, 6 * G, 0), NumaMemblk(6 * G, 10 * G, 1)]
    assert numa_memblks(2 * G, 1) == [NumaMemblk(0, 2 * G, 0)]


def test_physmem_ends_at_the_highest_ram_byte() -> None:
    assert Machine(mem="8G").physmem.size == 10 * G
    assert Machine(mem="2G", nodes=1).physmem.size == 2 * G


def test_dmesg_format_and_first_lines(k8) -> None:
    text = k8.dmesg()
    assert text.startswith("[    0.000000] Linux version 6.16.0")
    assert "[    0.000000] Command line: kho=on\n" in text
    assert "[    0.000000] BIOS-e820: [mem 0x0000000100000000-0x000000027fffffff] usable\n" in text
    assert all(re.fullmatch(r"\[ {0,4}\d+\.\d{6}\] .*", line) for line in text.splitlines())


def test_memblock_memory_8g(k8) -> None:
    # Page 0 is BIOS data (trim_bios_range), the partial page at 0x9f000 is trimmed,
    # and nodes split the high RAM at 6 GiB.
    assert lines(k8, "memblock/memory") == [
        "   0: 0x0000000000001000..0x000000000009efff    0 NONE",
        "   1: 0x0000000000100000..0x000000007fffffff    0 NONE",
        "   2: 0x0000000100000000..0x000000017fffffff    0 NONE",
        "   3: 0x0000000180000000..0x000000027fffffff    1 NONE",
    ]


def test_memblock_reserved_8g_by_hand(k8) -> None:
    # RSRV_KERN before scratch: kernel 32M (node 0, below 4G); memmap 32 sections x 2M per node,
    # from the top of each node: [6G-64M, 6G) and [10G-64M, 10G).
    # Scratch sizes (200%): lowmem = 2*32M = 64M; global = 2*(32M+128M) - 64M = 256M;
    # node0 = 2*(32M+64M) = 192M; node1 = 2*64M = 128M; all multiples of 2M.
    # Placement top-down: the 64-byte array just below node 1's memmap, lowmem under 2G,
    # global below the array (2M aligned), node0 right under its memmap (merges: same nid,
    # RSRV_KERN), node1 under the global area (no merge: global has nid NUMA_NO_NODE).
    assert lines(k8, "memblock/reserved") == [
        "   0: 0x0000000000000000..0x00000000000fffff    0 NONE",
        "   1: 0x0000000001000000..0x0000000002ffffff    0 RSV_KERN",
        "   2: 0x000000007c000000..0x000000007fffffff    x RSV_KERN",
        "   3: 0x0000000170000000..0x000000017fffffff    0 RSV_KERN",
        "   4: 0x0000000263e00000..0x000000026bdfffff    1 RSV_KERN",
        "   5: 0x000000026be00000..0x000000027bdfffff    x RSV_KERN",
        "   6: 0x000000027bfff000..0x000000027bfff03f    x RSV_KERN",
        "   7: 0x000000027c000000..0x000000027fffffff    1 RSV_KERN",
    ]
    assert scratch(k8) == [(0x7C000000, 64 * M), (0x26BE00000, 256 * M),
                           (0x170000000, 192 * M), (0x263E00000, 128 * M)]


def test_default_scratch_2g_one_node_has_an_empty_global_area(k2) -> None:
    # Everything is below 4G: lowmem = 2*(32M kernel + 32M memmap) = 128M, so
    # global = 128M - 128M = 0: memblock_phys_alloc(0) still "succeeds" at the top of free
    # memory, as in Linux; node0 = 128M.
    assert scratch(k2) == [(0x75E00000, 128 * M), (0x7E000000, 0), (0x6DE00000, 128 * M)]


def test_explicit_scratch_sizes_and_placement() -> None:
    k = Machine(mem="8G", nodes=2, cmdline="kho=on kho_scratch=16M,512M,256M reserve_mem=64m:4k:n1").boot()
    areas = scratch(k)
    assert [size for _, size in areas] == [0x1000000, 0x20000000, 0x10000000, 0x10000000]
    lowmem, _global, node0, node1 = areas
    assert lowmem[0] + lowmem[1] <= 4 * G
    assert 4 * G <= node0[0] and node0[0] + node0[1] <= 6 * G
    assert 6 * G <= node1[0] and node1[0] + node1[1] <= 10 * G
    assert all(addr % (2 * M) == 0 for addr, _ in areas)
    assert "KHO: scratch areas: lowmem: 16MiB global: 512MiB pernode: 256MiB" in k.dmesg()


def test_scratch_scale_percent() -> None:
    k = Machine(mem="8G", nodes=2, cmdline="kho=on kho_scratch=50%").boot()
    # 50% of: lowmem 32M -> 16M; all 160M -> 80M - 16M = 64M; node0 96M -> 48M; node1 64M -> 32M.
    assert [size for _, size in scratch(k)] == [16 * M, 64 * M, 48 * M, 32 * M]
    assert "KHO: scratch scale is 50%" in k.dmesg()


def test_kho_off_has_no_kho_directory() -> None:
    k = Machine(mem="2G", nodes=1, cmdline="").boot()
    assert not k.debugfs.exists("kho")
    assert k.debugfs.listdir("memblock") == ["memory", "reserved"]


def test_malformed_kho_option_logs_and_leaves_kho_off() -> None:
    k = Machine(mem="2G", nodes=1, cmdline="kho=maybe").boot()
    assert "Malformed early option 'kho'" in k.dmesg()
    assert not k.debugfs.exists("kho")


def test_malformed_kho_scratch_keeps_the_default_scale() -> None:
    k = Machine(mem="2G", nodes=1, cmdline="kho=on kho_scratch=16M,0,256M").boot()
    assert "Malformed early option 'kho_scratch'" in k.dmesg()
    assert [size for _, size in scratch(k)] == [128 * M, 0, 128 * M]


def test_reserve_mem_table_and_debugfs_file() -> None:
    cmdline = "reserve_mem=1M:4k:a reserve_mem=64m:2m:b reserve_mem=1M:4k:a reserve_mem=0:4k:c"
    k = Machine(mem="2G", nodes=1, cmdline=cmdline).boot()
    # The duplicate and the zero-sized entry are silently ignored, as __setup errors are.
    assert k.debugfs.read("memblock/reserve_mem_param") == b"a\t\t(1.00 MiB)\nb\t\t(64.0 MiB)\n"
    assert [line for line in k.dmesg().splitlines()
            if "reserve_mem" in line and "ommand line" not in line] == []
    a = k.reserve_mem.reserve_mem_find_by_name("a")
    b = k.reserve_mem.reserve_mem_find_by_name("b")
    assert a is not None and b is not None
    assert a[1] == M and b[1] == 64 * M and b[0] % (2 * M) == 0
    assert k.memblock.is_region_reserved(b[0], b[1])
    assert k.reserve_mem.reserve_mem_find_by_name("c") is None


def test_reserve_mem_without_kho_builds_no_memblock_fdt() -> None:
    k = Machine(mem="2G", nodes=1, cmdline="reserve_mem=1M:4k:a").boot()
    assert k.reserve_mem.kho_fdt is None


def test_memblock_debug_prints_the_configuration() -> None:
    k = Machine(mem="2G", nodes=1, cmdline="memblock=debug").boot()
    text = k.dmesg()
    assert "] MEMBLOCK configuration:\n" in text
    assert "]  memory.cnt  = 0x2\n" in text
    assert re.search(r"memblock_alloc_try_nid_raw: 2097152 bytes align=0x200000 nid=0 "
                     r"from=0x0000000001000000 max_addr=0x0000000000000000 sparse_init\+0x0/0x0", text)


def test_mem_removes_ram_above_that_address_and_prints_the_user_map() -> None:
    # x86 parse_memopt: e820__range_remove(limit, ULLONG_MAX - limit): an address, not an amount,
    # so on q35 mem=3G drops all RAM above 4 GiB.
    k = Machine(mem="8G", nodes=2, cmdline="mem=3G").boot()
    text = k.dmesg()
    assert "user-defined physical RAM map:\n" in text
    assert "user: [mem 0x0000000000100000-0x000000007fffffff] usable\n" in text
    assert "user: [mem 0x0000000100000000" not in text
    assert k.memblock.end_of_DRAM() == 2 * G


def test_proc_cmdline_is_the_boot_command_line(k8) -> None:
    assert k8.cmdline == "kho=on"


def test_iomem_lists_ram_and_the_kernel() -> None:
    k = Machine(mem="2G", nodes=1).boot()
    assert k.iomem() == (
        "00000000-00000fff : Reserved\n"
        "00001000-0009fbff : System RAM\n"
        "0009fc00-0009ffff : Reserved\n"
        "000f0000-000fffff : Reserved\n"
        "00100000-7fffffff : System RAM\n"
        "  01000000-02ffffff : Kernel code\n")


def test_page_allocator_never_hands_out_reserved_or_scratch(k8) -> None:
    folio = k8.page_alloc.alloc_pages(4)
    assert folio is not None
    assert not k8.memblock.is_region_reserved(folio.phys, folio.size)
    for addr, size in scratch(k8):
        assert not (addr < folio.phys + folio.size and folio.phys < addr + size)
    k8.page_alloc.free_folio(folio)


def test_one_tib_machine_boots_sparsely() -> None:
    m = Machine(mem="1T", nodes=4, cmdline="kho=on")
    k = m.boot()
    assert len(scratch(k)) == 6
    # The memmap is 16 GiB of RAM but raw: nothing is written, so nothing is materialised.
    assert m.physmem.materialized_pages < 64


@pytest.mark.parametrize(("mem", "nodes"), [("8G", 0), ("64G", 17), ("200M", 2)])
def test_impossible_machines_are_refused(mem: str, nodes: int) -> None:
    with pytest.raises(ValueError, match="NUMA nodes"):
        Machine(mem=mem, nodes=nodes)


def test_sixteen_nodes_get_eighteen_scratch_areas() -> None:
    k = Machine(mem="64G", nodes=16, cmdline="kho=on").boot()
    assert len(scratch(k)) == 16 + 2
