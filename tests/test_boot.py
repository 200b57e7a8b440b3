"""The machine model and the cold-boot path: every number derived by hand.

The derivations follow the README's "The machine model": a QEMU q35 e820 map, NUMA nodes
taking RAM in address order in equal shares, the kernel image at 16 MiB (32 MiB), the first
64 KiB and the BIOS regions reserved, the real-mode trampoline (28 KiB, RSV_KERN) under them,
a 64-byte struct page per page, 2 MiB per 128 MiB section, in one block per node from the top of the
node, swiotlb when RAM reaches above 4 GiB, then KHO's scratch: 200% of RSRV_KERN memory by
default (kernel/kexec_handover.c scratch_size_update()), each size rounded up to 2 MiB.
"""

import re

import pytest

from sim.arch.x86.boot.bzimage import make_bzimage
from sim.arch.x86.bootparam import E820_TYPE_RAM, E820_TYPE_RESERVED, E820Entry
from sim.arch.x86.q35 import NumaMemblk, numa_memblks, q35_e820
from sim.kernel.kexec_file import KEXEC_FILE_NO_INITRAMFS
from sim.machine import Machine

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


def test_trim_bios_range_is_logged_at_kern_debug(k8) -> None:
    # printk(KERN_DEBUG ...), unlike pr_debug(), is in every kernel's log; %#010Lx prints 0x0.
    records = [(r.level, r.text) for r in k8.printk.records if r.text.startswith("e820: ")]
    assert records == [(7, "e820: update [mem 0x00000000-0x00000fff] usable ==> reserved"),
                       (7, "e820: remove [mem 0x000a0000-0x000fffff] usable")]
    assert "] e820: remove [mem 0x000a0000-0x000fffff] usable\n" in k8.dmesg()


def test_memblock_memory_8g(k8) -> None:
    # Page 0 is BIOS data (trim_bios_range), the partial page at 0x9f000 is trimmed,
    # and nodes split the high RAM at 6 GiB.
    assert lines(k8, "memblock/memory") == [
        "   0: 0x0000000000001000..0x000000000009efff    0 NONE",
        "   1: 0x0000000000100000..0x000000007fffffff    0 NONE",
        "   2: 0x0000000100000000..0x000000017fffffff    0 NONE",
        "   3: 0x0000000180000000..0x000000027fffffff    1 NONE",
    ]


K = 1 << 10
# RSRV_KERN memory of the 8 GiB / 2-node boot before kho_reserve_scratch(), in boot order:
KERNEL = 32 * M          # early_reserve_memory(): the image's init_size at 16 MiB (node 0, low)
TRAMPOLINE = 28 * K      # reserve_real_mode(): memblock_phys_alloc_range(0x7000, 4K, 0, 1M)
MEMMAP = 64 * M          # sparse_init(): 32 sections x 2 MiB of struct pages per node
SWIOTLB = 64 * M         # swiotlb_init(): IO_TLB_DEFAULT_SIZE, memblock_alloc_low (RAM ends > 4G)
SLOTS = 768 * K          # its slot array: 32768 slabs x 24 bytes, memblock_alloc (anywhere)
AREAS = 16               # its one io_tlb_area (one CPU), memblock_alloc(16, 64)


def test_memblock_reserved_8g_by_hand(k8) -> None:
    # Scratch sizes (200%, each rounded up to 2M):
    #   lowmem (below 4G): 2 * (KERNEL + TRAMPOLINE + SWIOTLB) = 192M + 56K -> 194M;
    #   global: 2 * (all RSV_KERN) - lowmem = 2 * (224M + 796K + 16) - 194M = 255M + 568K + 32 -> 256M;
    #   node0 (nid 0 only; swiotlb is NUMA_NO_NODE): 2 * (KERNEL + TRAMPOLINE + MEMMAP) -> 194M;
    #   node1: 2 * MEMMAP = 128M.
    assert [size for _, size in scratch(k8)] == [194 * M, 256 * M, 194 * M, 128 * M]
    # Placement, all top-down.  Below 1M: [0, 64K) and the BIOS regions from the EBDA page
    # 0x9f000 (BDA: EBDA segment 0x9fc0) to 1M are reserved first, so the trampoline ends at
    # 0x9f000; reserve_real_mode() then fills the gaps of [0, 1M) without touching it.
    # swiotlb takes [2G-64M, 2G), its slots the top of free RAM, [10G-64M-768K, 10G-64M), and
    # its areas the next 64-byte-aligned 16 bytes under them.  Scratch: the array
    # (memblock_alloc 64 bytes, 4K aligned) under the areas at 0x27bf3f000; lowmem under the
    # swiotlb at 2G-64M-194M = 0x6fe00000; global under the array, 2M aligned:
    # round_down(0x27bf3f000 - 256M, 2M) = 0x26be00000; node0 under its memmap, 6G-64M-194M =
    # 0x16fe00000; node1 under the global area, 0x26be00000 - 128M = 0x263e00000.
    # memblock_free_all() (memmap_init_reserved_pages) then gives every reservation the node
    # of its memory region, so the NUMA_NO_NODE ones lose their "x" and merge with neighbours
    # of the same node and flags: lowmem scratch + swiotlb, node1 + global scratch, slots +
    # node 1's memmap.  The array and the areas stay apart (gaps of 0xf80 and 0x30 bytes).
    assert lines(k8, "memblock/reserved") == [
        "   0: 0x0000000000000000..0x0000000000097fff    0 NONE",
        "   1: 0x0000000000098000..0x000000000009efff    0 RSV_KERN",
        "   2: 0x000000000009f000..0x00000000000fffff    0 NONE",
        "   3: 0x0000000001000000..0x0000000002ffffff    0 RSV_KERN",
        "   4: 0x000000006fe00000..0x000000007fffffff    0 RSV_KERN",
        "   5: 0x000000016fe00000..0x000000017fffffff    0 RSV_KERN",
        "   6: 0x0000000263e00000..0x000000027bdfffff    1 RSV_KERN",
        "   7: 0x000000027bf3f000..0x000000027bf3f03f    1 RSV_KERN",
        "   8: 0x000000027bf3ffc0..0x000000027bf3ffcf    1 RSV_KERN",
        "   9: 0x000000027bf40000..0x000000027fffffff    1 RSV_KERN",
    ]
    assert scratch(k8) == [(0x6FE00000, 194 * M), (0x26BE00000, 256 * M),
                           (0x16FE00000, 194 * M), (0x263E00000, 128 * M)]


def test_swiotlb_is_reported_where_it_was_allocated(k8) -> None:
    # pci_iommu_init() (rootfs_initcall) reports the buffer; the end address is exclusive.
    text = k8.dmesg()
    assert "] software IO TLB: area num 1.\n" in text
    assert "] PCI-DMA: Using software bounce buffering for IO (SWIOTLB)\n" in text
    assert "] software IO TLB: mapped [mem 0x000000007c000000-0x0000000080000000] (64MB)\n" in text


def test_default_scratch_2g_one_node_has_an_empty_global_area(k2) -> None:
    # RAM ends at 2G, so no swiotlb.  Everything is below 4G: lowmem = 2 * (32M kernel + 28K
    # trampoline + 32M memmap) = 128M + 56K -> 130M; global = (128M + 56K - 130M) as a u64
    # wraps, and round_up() wraps it back to 0: memblock_phys_alloc(0) still "succeeds" at the
    # top of free memory, as in Linux; node0 = 130M.  Top-down: the 48-byte array at
    # 0x7dfff000 under the memmap [2G-32M, 2G), lowmem round_down(0x7dfff000 - 130M, 2M)
    # = 0x75c00000, node0 under it at 0x6da00000.
    assert scratch(k2) == [(0x75C00000, 130 * M), (0x7E000000, 0), (0x6DA00000, 130 * M)]
    assert "software IO TLB" not in k2.dmesg()


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
    # 50% of (see test_memblock_reserved_8g_by_hand): lowmem 96M + 28K -> 48M + 14K -> 50M;
    # all 224M + 796K + 16 -> 112M + 398K + 8, minus 50M -> 64M; node0 96M + 28K -> 50M;
    # node1 64M -> 32M.
    assert [size for _, size in scratch(k)] == [50 * M, 64 * M, 50 * M, 32 * M]
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
    assert [size for _, size in scratch(k)] == [130 * M, 0, 130 * M]


@pytest.mark.parametrize("version", ["6.16", "6.17", "6.18"])
def test_reserve_mem_table_without_a_debugfs_file(version: str) -> None:
    cmdline = "reserve_mem=1M:4k:a reserve_mem=64m:2m:b reserve_mem=1M:4k:a reserve_mem=0:4k:c"
    k = Machine(mem="2G", nodes=1, cmdline=cmdline, kernel_version=version).boot()
    # memblock/reserve_mem_param came after 6.18: these kernels only have memory and reserved.
    assert k.debugfs.listdir("memblock") == ["memory", "reserved"]
    # The duplicate and the zero-sized entry are silently ignored, as __setup errors are.
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
    # sparse_buffer_init: the node's 16 sections' memmap in one allocation, through memmap_alloc.
    assert re.search(r"memblock_alloc_exact_nid_raw: 33554432 bytes align=0x200000 nid=0 "
                     r"from=0x0000000001000000 max_addr=0x0000000000000000 memmap_alloc\+0x0/0x0", text)


def test_mem_removes_ram_above_that_address_and_prints_the_user_map() -> None:
    # x86 parse_memopt: e820__range_remove(limit, ULLONG_MAX - limit): an address, not an amount,
    # so on q35 mem=3G drops all RAM above 4 GiB.
    k = Machine(mem="8G", nodes=2, cmdline="mem=3G").boot()
    text = k.dmesg()
    assert "] e820: remove [mem 0xc0000000-0xfffffffffffffffe] usable\n" in text
    assert "user-defined physical RAM map:\n" in text
    assert "user: [mem 0x0000000000100000-0x000000007fffffff] usable\n" in text
    assert "user: [mem 0x0000000100000000" not in text
    assert k.memblock.end_of_DRAM() == 2 * G


@pytest.mark.parametrize("arg", ["mem=nopentium", "mem"])
def test_mem_rejected_before_userdef_prints_no_user_map(arg: str) -> None:
    # parse_memopt() returns -EINVAL for a missing value and for "nopentium" before userdef = 1.
    text = Machine(mem="2G", nodes=1, cmdline=arg).boot().dmesg()
    assert "] Malformed early option 'mem'\n" in text
    assert "user-defined physical RAM map" not in text


def test_mem_zero_prints_the_user_map_then_fails() -> None:
    # A 0 size fails after userdef = 1: the unchanged map is printed as the user's.
    text = Machine(mem="2G", nodes=1, cmdline="mem=0").boot().dmesg()
    assert "] Malformed early option 'mem'\n" in text
    assert "] user: [mem 0x0000000000100000-0x000000007fffffff] usable\n" in text


def test_banner_and_command_line_levels() -> None:
    k = Machine(mem="2G", nodes=1, cmdline="quiet").boot()

    def record(prefix: str) -> tuple[int, str]:
        return next((r.level, r.text) for r in k.printk.records if r.text.startswith(prefix))

    # linux_banner names the compiler and carries the build date of the image's version string;
    # it and "Kernel command line:" are pr_notice (5), setup_arch's "Command line:" KERN_INFO (6).
    assert record("Linux version ") == (5, "Linux version 6.16.0-khofs (khofs@khofs) (gcc (Debian "
                                           "14.2.0-19) 14.2.0, GNU ld (GNU Binutils for Debian) 2.44) "
                                           "#1 SMP PREEMPT_DYNAMIC Sun Jul 27 00:00:00 UTC 2025")
    assert record("Kernel command line:") == (5, "Kernel command line: quiet")
    assert record("Command line:") == (6, "Command line: quiet")


def test_unknown_parameters_are_passed_to_init() -> None:
    # unknown_bootoption(): dotted names are unused module parameters; name=value goes to init's
    # environment (TERM= replaces "TERM=linux", so it is not printed; the quotes of a quoted
    # value are gone); the rest to its argv, which print_unknown_bootoptions() lists first.
    cmdline = 'kho=on console=ttyS0 root=/dev/vda ro quiet foo bar=1 TERM=xterm net.ifnames=0 x="a b" baz'
    text = Machine(mem="2G", nodes=1, cmdline=cmdline).boot().dmesg()
    assert ('] Unknown kernel command line parameters "foo baz bar=1 x=a b", '
            "will be passed to user space.\n") in text


def test_no_unknown_parameters_no_line(k8) -> None:
    assert "Unknown kernel command line" not in k8.dmesg()


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


@pytest.mark.parametrize(("version", "test_kho", "backport"), [
    ("6.16", True, True), ("6.16", False, False), ("6.17", True, False), ("6.18", True, False)])
def test_test_kho_on_6_16_is_announced_as_a_backport(version: str, test_kho: bool, backport: bool) -> None:
    # lib/test_kho.c is new in 6.17: a 6.16 kernel with it says, right under its banner, that it
    # is a backport, in the simulator's voice.
    k = Machine(mem="2G", nodes=1, kernel_version=version, test_kho=test_kho).boot()
    second = k.printk.records[1].text
    assert (second == "[khofs: CONFIG_TEST_KEXEC_HANDOVER: lib/test_kho.c first appeared in 6.17 and "
                      "is backported into this 6.16 kernel]") == backport
    assert second.startswith("[khofs") == backport


def test_scratch_not_a_multiple_of_2m_frees_its_whole_last_pageblock() -> None:
    # kho_scratch= lowmem and global sizes are not rounded, but kho_init() hands scratch to the
    # page allocator one pageblock (2 MiB) at a time from each area's base.  Top-down on 2 GiB:
    # memmap [2G-32M, 2G), the array's page at 0x7dfff000, lowmem 3M at round_down(0x7dfff000 -
    # 3M, 2M) = 0x7dc00000, global 5M under it at 0x7d600000, node0 4M at 0x7d200000.
    k = Machine(mem="2G", nodes=1, cmdline="kho=on kho_scratch=3M,5M,4M").boot()
    assert scratch(k) == [(0x7DC00000, 3 * M), (0x7D600000, 5 * M), (0x7D200000, 4 * M)]
    text = k.dmesg()
    assert ("KHO: scratch 0x7dc00000+0x300000 ends inside a pageblock [khofs: Linux frees whole "
            "pageblocks, so [0x7df00000-0x7e000000) goes to the page allocator too, reserved or not]\n"
            in text)
    assert "KHO: scratch 0x7d600000+0x500000 ends inside a pageblock" in text
    assert "KHO: scratch 0x7d200000" not in text
    # The freed tail holds the scratch array itself: the next movable page allocation (the
    # highest free page) takes the page kexec will copy the array from.
    folio = k.page_alloc.alloc_pages(0, movable=True)
    assert folio is not None and folio.phys == k.kho.kho_scratch_phys == 0x7DFFF000


def test_bios_regions_follow_the_bda_in_ram() -> None:
    # reserve_bios_regions() reads the EBDA segment (0x40e) and base memory size (0x413) from
    # RAM.  Move the EBDA to 512K before a kexec: the new kernel reserves [512K, 1M) early, so
    # reserve_real_mode()'s trampoline (28K, top-down) lands right below it.
    m = Machine(mem="2G", nodes=1)
    k = m.boot()
    assert lines(k, "memblock/reserved")[:3] == [
        "   0: 0x0000000000000000..0x0000000000097fff    0 NONE",
        "   1: 0x0000000000098000..0x000000000009efff    0 RSV_KERN",
        "   2: 0x000000000009f000..0x00000000000fffff    0 NONE"]
    m.physmem.write(0x40E, (0x80000 >> 4).to_bytes(2, "little"))
    k.kexec_file_load(make_bzimage("6.16"), None, k.cmdline, KEXEC_FILE_NO_INITRAMFS)
    k2 = m.kexec()
    assert lines(k2, "memblock/reserved")[:3] == [
        "   0: 0x0000000000000000..0x0000000000078fff    0 NONE",
        "   1: 0x0000000000079000..0x000000000007ffff    0 RSV_KERN",
        "   2: 0x0000000000080000..0x00000000000fffff    0 NONE"]


@pytest.mark.parametrize(("arg", "sizes", "report"), [
    # No bounce buffer: lowmem = 2 * (32M kernel + 28K trampoline) -> 66M; global =
    # 2 * (160M + 28K) - 66M -> 256M; the report finds no pool.
    ("swiotlb=noforce", [66 * M, 256 * M, 194 * M, 128 * M], "software IO TLB: No low mem"),
    # 8192 slabs of 2K = 16M and 8192 * 24 bytes = 192K of slots: lowmem = 2 * (48M + 28K) -> 98M;
    # global = 2 * (176M + 220K + 16) - 98M -> 256M.
    ("swiotlb=8192", [98 * M, 256 * M, 194 * M, 128 * M],
     "software IO TLB: mapped [mem 0x000000007f000000-0x0000000080000000] (16MB)"),
])
def test_swiotlb_parameter_resizes_lowmem_scratch(arg: str, sizes: list[int], report: str) -> None:
    k = Machine(mem="8G", nodes=2, cmdline=f"kho=on {arg}").boot()
    assert [size for _, size in scratch(k)] == sizes
    assert f"] {report}\n" in k.dmesg()


def test_bare_swiotlb_is_ignored_with_a_khofs_line() -> None:
    # setup_io_tlb_npages(NULL) dereferences NULL in Linux; the simulator says so and goes on.
    text = Machine(mem="8G", nodes=2, cmdline="swiotlb").boot().dmesg()
    assert ("] swiotlb: no value [khofs: Linux 6.16 dereferences NULL in setup_io_tlb_npages and "
            "crashes; ignored]\n") in text
    assert "Malformed early option" not in text
    assert "(64MB)" in text


def test_memblock_debug_traces_the_trampoline_and_swiotlb() -> None:
    # The request lines of a QEMU boot's memblock=debug log, with the simulator's +0x0/0x0 offsets.
    text = Machine(mem="8G", nodes=2, cmdline="memblock=debug").boot().dmesg()
    assert ("] memblock_phys_alloc_range: 28672 bytes align=0x1000 from=0x0000000000000000 "
            "max_addr=0x0000000000100000 reserve_real_mode+0x0/0x0\n") in text
    assert ("] memblock_alloc_try_nid: 67108864 bytes align=0x1000 nid=-1 from=0x0000000000000000 "
            "max_addr=0x00000000ffffffff swiotlb_init_remap+0x0/0x0\n") in text
    assert ("] memblock_alloc_try_nid: 786432 bytes align=0x1000 nid=-1 from=0x0000000000000000 "
            "max_addr=0x0000000000000000 swiotlb_init_remap+0x0/0x0\n") in text


def test_a_memmap_that_fits_nowhere_is_reported_as_sparse_init_nid_does() -> None:
    """A KHO boot allocates only from scratch; 4 MiB of per-node scratch cannot hold a node's 64 MiB
    memmap, nor (after node 0 took what global scratch had) its 2 MiB blocks one by one.

    Expect node 0's memmap to come from the 2 MiB fallback and node 1 to fail with Linux's line.
    """
    m = Machine(mem="8G", nodes=2, cmdline="kho=on kho_scratch=16M,96M,4M")
    k = m.boot()
    k.debugfs.write("kho/out/finalize", b"1")
    k.kexec_file_load(make_bzimage("6.16"), None, k.cmdline, KEXEC_FILE_NO_INITRAMFS)
    text = m.kexec().dmesg()
    assert "sparse_init_nid: node[0]" not in text
    assert re.search(r"\] sparse_init_nid: node\[1\] memory map backing failed. Some memory will not be "
                     r"available.\n", text)


@pytest.mark.parametrize(("mem", "nodes", "arg", "sizes", "lines"), [
    # iommu=off: pci_swiotlb_detect() leaves swiotlb off although RAM ends above 4G (as noforce).
    ("8G", 2, "iommu=off", [66 * M, 256 * M, 194 * M, 128 * M], []),
    # iommu=soft: swiotlb on a 2G machine.  Everything is low: 2 * (32M + 28K + 32M memmap + 64M
    # + 768K + 16) -> 258M; global wraps to 0; node0 = 2 * (64M + 28K) -> 130M.
    ("2G", 1, "iommu=soft", [258 * M, 0, 130 * M],
     ["PCI-DMA: Using software bounce buffering for IO (SWIOTLB)"]),
    # Prefix matching per comma-separated option; usedac returns 1, which Linux calls malformed.
    ("2G", 1, "iommu=nodacx,usedac,off", [130 * M, 0, 130 * M],
     ["nodac option ignored.", "Malformed early option 'iommu'"]),
    ("2G", 1, "iommu", [130 * M, 0, 130 * M], ["Malformed early option 'iommu'"]),
])
def test_iommu_parameter_decides_swiotlb(mem: str, nodes: int, arg: str, sizes: list[int],
                                         lines: list[str]) -> None:
    k = Machine(mem=mem, nodes=nodes, cmdline=f"kho=on {arg}").boot()
    assert [size for _, size in scratch(k)] == sizes
    text = k.dmesg()
    assert all(f"] {line}\n" in text for line in lines)
    assert ("software IO TLB: mapped" in text) == ("iommu=soft" in arg)
