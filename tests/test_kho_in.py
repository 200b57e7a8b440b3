"""The incoming side of KHO: reserve_mem revival rules (spec §8), hand-over validation (issue 4 item 5),
kho_retrieve_subtree and kho_restore_folio (spec §4.3, §6), all on 6.16 with a scrubbing machine."""

import errno
import struct
from dataclasses import dataclass

import pytest
from kho_common import (
    CMDLINE,
    DISABLING,
    FOUND,
    MAX_PAGE_ORDER,
    PAGE_SIZE,
    SCRATCH_LEN,
    arch,  # noqa: F401 - the fixture every test here runs under
    boot,
    finalize,
    greedy_split,
    hexlines,
    inside_any,
    kexec,
    kho_lines,
    load,
    log,
    machine,
    make_image,
    only,
    patch_handover,
    patch_kho_setup_data,
    prop_bytes,
    prop_u64,
    random_bytes,
    read_chunks,
    regions,
    scratch_areas,
    setup_data,
)

from sim.init.main import Kernel
from sim.lib import fdt as libfdt
from sim.machine import Machine

pytestmark = pytest.mark.usefixtures("arch")

SCRATCH = "kho=on kho_scratch=16M,512M,256M"


def _find(k: Kernel, name: str) -> tuple[int, int]:
    found = k.reserve_mem.reserve_mem_find_by_name(name)
    assert found is not None, name
    return found


# -- reserve_mem revive rules (spec §8 steps 3-8, §12.2) --

@dataclass
class Revive:
    old: dict[str, tuple[int, int]]
    scratch: list[tuple[int, int]]
    n3_align: int
    k1: Kernel


@pytest.fixture(scope="module")
def revive() -> Revive:
    names = ("n1", "n2", "n3", "n4")
    m, k0 = boot(cmdline=SCRATCH + "".join(f" reserve_mem=64m:4k:{n}" for n in names))
    old = {n: _find(k0, n) for n in names}
    finalize(k0)
    scratch = scratch_areas(k0)
    start = old["n3"][0]
    n3_align = (start & -start) << 1           # the smallest power of two that n3's start violates
    assert old["n4"][0] % (1 << 20) == 0       # so a 1 MiB alignment request still fits n4
    k1 = kexec(m, cmdline=(f"{SCRATCH} reserve_mem=64m:4k:n1 reserve_mem=32m:4k:n2 "
                           f"reserve_mem=64m:{n3_align:#x}:n3 reserve_mem=64m:4k:x reserve_mem=64m:1m:n4"))
    return Revive(old, scratch, n3_align, k1)


def test_same_name_size_and_align_is_revived_in_place(revive: Revive) -> None:
    assert _find(revive.k1, "n1") == revive.old["n1"]


def test_a_weaker_alignment_that_the_old_start_meets_is_revived(revive: Revive) -> None:
    """Step 6 only checks start & (align - 1): 1 MiB divides the old start, so n4 comes back."""
    assert _find(revive.k1, "n4") == revive.old["n4"]


def test_revive_messages_in_command_line_order(revive: Revive) -> None:
    n3 = revive.old["n3"][0]
    lines = [line for line in kho_lines(revive.k1) if line != FOUND and not line.startswith("KHO: scratch")]
    assert lines == [
        "Revived memory reservation 'n1' from KHO",
        "KHO reserve-mem 'n2' has wrong size (0x4000000 != 0x2000000)",
        f"KHO reserve-mem 'n3' has wrong alignment (0x{revive.n3_align:x}, 0x{n3:x})",
        "FDT 'memblock' has no child 'x': -1",
        "Revived memory reservation 'n4' from KHO",
    ]


@pytest.mark.parametrize("name", ["n2", "n3", "x"])
def test_entries_not_revived_are_allocated_inside_scratch(revive: Revive, name: str) -> None:
    """6.16 quirk (spec §12.2): reserve_mem= runs in scratch-only mode, so fresh allocations land there."""
    start, size = _find(revive.k1, name)
    assert inside_any(start, start + size, revive.scratch), hex(start)
    assert (start, size) != revive.old.get(name)
    if name == "n3":
        assert start % revive.n3_align == 0


def test_entry_in_scratch_is_lost_across_the_next_kexec() -> None:
    """Spec §12.2, Linux 6.16 behaviour: a range preserved although it lies in scratch is revived at the
    same address by the next kernel, but its contents are gone — that kernel is free to reuse scratch
    from its first instruction (the scrubbing machine makes the loss certain instead of likely)."""
    m, k0 = boot()
    finalize(k0)
    cmd = CMDLINE.replace("64m:4k:n1", "32m:4k:n1")
    k1 = kexec(m, cmdline=cmd)
    n1 = _find(k1, "n1")
    assert inside_any(n1[0], n1[0] + n1[1], scratch_areas(k1))
    pattern = random_bytes(n1[1], seed=11)
    m.physmem.write(n1[0], pattern)
    finalize(k1)
    memblock = k1.debugfs.read("kho/out/sub_fdts/memblock")
    assert prop_u64(memblock, "/n1", "start") == n1[0]            # it *is* handed over
    k2 = kexec(m, cmdline=cmd)
    assert "Revived memory reservation 'n1' from KHO" in log(k2)
    assert _find(k2, "n1") == n1
    data = m.physmem.read(*n1)
    assert data != pattern
    assert data.count(0xAA) > len(data) // 2


def test_missing_preserved_memory_map_revives_no_memory() -> None:
    """Spec §4.3 step 1: no map → `failed to get preserved memory bitmaps`; nothing becomes RSV_NIT.
    reserve_mem still finds n1 in the memblock FDT (Linux does not cross-check), so n1's table entry
    comes back while its memory goes to the page allocator — Linux's own half-revival."""
    m, k0 = boot()
    n1 = _find(k0, "n1")
    pattern = random_bytes(n1[1], seed=12)
    m.physmem.write(n1[0], pattern)
    finalize(k0)
    load(k0)
    assert k0.kho.ser.fdt is not None
    # The placeholder property (tag, len, nameoff, 8-byte value) follows compatible: 0x5c..0x70.
    m.physmem.write(k0.kho.ser.fdt.phys + 0x5C, struct.pack(">5I", *[4] * 5))
    k1 = m.kexec()
    lines = log(k1)
    assert FOUND in lines
    assert "KHO: failed to get preserved memory bitmaps" in lines
    assert not [r for r in regions(k1, "reserved") if r.flag == "RSV_NIT"]
    assert _find(k1, "n1") == n1
    assert m.physmem.read(*n1) != pattern


# -- the simulator's hand-over validation (issue 4 item 5) --

def _corrupt(kind: str, m: Machine, chunks: list, size: int) -> None:
    first, last = chunks[0], chunks[-1]
    w = m.physmem.write
    if kind == "cycle":
        w(last.phys, struct.pack("<Q", first.phys))
    elif kind == "self-loop":
        w(first.phys, struct.pack("<Q", first.phys))
    elif kind == "next-outside-ram":
        w(last.phys, struct.pack("<Q", 1 << 50))
    elif kind == "next-misaligned":
        w(last.phys, struct.pack("<Q", first.phys + 8))
    elif kind == "bitmap-outside-ram":
        w(first.phys + 24, struct.pack("<Q", size))
    elif kind == "num-elms-256":
        w(first.phys + 12, struct.pack("<I", 256))
    elif kind == "order-52":
        w(first.phys + 8, struct.pack("<I", 52))
    elif kind == "order-40":
        w(first.phys + 8, struct.pack("<I", 40))
    elif kind == "block-beyond-ram":
        w(first.phys + 16, struct.pack("<Q", size))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["cycle", "self-loop", "next-outside-ram", "next-misaligned",
                                  "bitmap-outside-ram", "num-elms-256", "order-52", "order-40",
                                  "block-beyond-ram"])
def test_corrupt_chunk_list_disables_revival_cleanly(kind: str) -> None:
    """Linux 6.16 would loop, fault or half-revive; the simulator refuses the whole list up front,
    logs its own (marked) reason and Linux's `disabling KHO revival: -22`, and cold-boots."""
    m, k0 = boot()
    finalize(k0)
    out = k0.debugfs.read("kho/out/fdt")
    chunks = read_chunks(m.physmem, prop_u64(out, "/", "preserved-memory-map"))
    assert len(chunks) >= 2 and chunks[0].elms
    load(k0)
    _corrupt(kind, m, chunks, m.physmem.size)
    k1 = m.kexec()
    lines = kho_lines(k1)
    i = lines.index(DISABLING)
    assert lines[i - 1].startswith("KHO: setup: ") and lines[i - 1].endswith("[khofs: not checked by Linux]")
    assert FOUND not in lines
    assert not [line for line in lines if "Revived" in line or "reserve-mem" in line]
    assert not k1.debugfs.exists("kho/in")
    assert {r.flag for r in regions(k1, "memory")} == {"NONE"}
    assert not [r for r in regions(k1, "reserved") if r.flag == "RSV_NIT"]
    assert not k1.kho.kho_in_fdt_phys
    assert hexlines(k1, "kho/out/scratch_len") == SCRATCH_LEN
    finalize(k1)                                     # and the new kernel works normally


# -- kho_retrieve_subtree (spec §6) --

def test_retrieve_subtree_without_a_handover_is_enoent() -> None:
    _, k = boot()
    assert k.kho.kho_retrieve_subtree("memblock") == (-errno.ENOENT, 0)


@pytest.fixture(scope="module")
def kho_boot() -> tuple[Machine, bytes, Kernel]:
    """A 6.16 → 6.16 hand-over with test_kho on (its folios exercise kho_restore_folio)."""
    m, k0 = boot(test_kho=True)
    finalize(k0)
    out = k0.debugfs.read("kho/out/fdt")
    return m, out, kexec(m)


def test_retrieve_subtree_found_and_missing(kho_boot: tuple[Machine, bytes, Kernel]) -> None:
    _, out, k1 = kho_boot
    assert k1.kho.kho_retrieve_subtree("memblock") == (0, prop_u64(out, "/memblock", "fdt"))
    assert k1.kho.kho_retrieve_subtree("kho_test") == (0, prop_u64(out, "/kho_test", "fdt"))
    assert k1.kho.kho_retrieve_subtree("nope") == (-errno.ENOENT, 0)


def test_retrieve_subtree_bad_fdt_property_is_einval() -> None:
    """A root whose `memblock` has a 4-byte `fdt` and whose `nofdt` has none: both -EINVAL; debugfs warns
    about the first and skips the second silently; memblock logs the retrieval error and allocates afresh."""
    m, k0 = boot()
    finalize(k0)
    out = k0.debugfs.read("kho/out/fdt")
    sw = libfdt.FdtSw(PAGE_SIZE)
    err = sw.finish_reservemap() | sw.begin_node("") | sw.property_string("compatible", "kho-v1")
    err |= sw.property("preserved-memory-map", prop_bytes(out, "/", "preserved-memory-map"))
    err |= sw.begin_node("memblock") | sw.property("fdt", b"\0\0\0\0") | sw.end_node()
    err |= sw.begin_node("nofdt") | sw.end_node() | sw.end_node() | sw.finish()
    assert err == 0
    load(k0)
    assert k0.kho.ser.fdt is not None
    m.physmem.write(k0.kho.ser.fdt.phys, bytes(sw.buf))
    k1 = m.kexec()
    assert k1.kho.kho_retrieve_subtree("memblock") == (-errno.EINVAL, 0)
    assert k1.kho.kho_retrieve_subtree("nofdt") == (-errno.EINVAL, 0)
    lines = kho_lines(k1)
    assert FOUND in lines
    assert "failed to retrieve FDT 'memblock' from KHO: -22" in lines
    assert "KHO: node `memblock`'s prop `fdt` has invalid length: 4" in lines
    assert not [line for line in lines if "nofdt" in line]
    assert k1.debugfs.listdir("kho/in/sub_fdts") == []
    assert not [line for line in lines if "Revived" in line]


# -- kho_restore_folio (spec §4.3) --

def test_restore_folio_refuses_orders_above_max_page_order(kho_boot: tuple[Machine, bytes, Kernel]) -> None:
    """n1 (64 MiB, 64 MiB-aligned) is one order-14 block: reserved, but not restorable as a folio."""
    _, out, k1 = kho_boot
    n1 = _find(k1, "n1")
    blocks = greedy_split(*n1)
    assert blocks == {(n1[0], 14)}
    assert k1.kho.kho_restore_folio(n1[0]) is None


def test_restore_folio_outside_online_memory_is_null(kho_boot: tuple[Machine, bytes, Kernel]) -> None:
    _, _, k1 = kho_boot
    assert k1.kho.kho_restore_folio(0xC000_0000) is None        # the 2-4 GiB PCI hole


def test_6_16_restores_the_same_folio_twice(kho_boot: tuple[Machine, bytes, Kernel]) -> None:
    """6.16 has no KHOP magic: page->private stays the order, so a second restore succeeds too —
    the root page (restored by kho_memory_init), and every test_kho folio (restored by test_kho)."""
    _, out, k1 = kho_boot
    assert "test_kho: KHO restore succeeded" in log(k1)
    for _ in range(2):
        folio = k1.kho.kho_restore_folio(prop_u64(out, "/memblock", "fdt"))
        assert folio is not None and folio.order == 0
    root = k1.kho.kho_in_fdt_phys
    folio = k1.kho.kho_restore_folio(root)
    assert folio is not None and (folio.phys, folio.order) == (root, 0)
    test_fdt = k1.debugfs.read("kho/in/sub_fdts/kho_test")
    info = prop_bytes(test_fdt, "/data", "folios_info")
    nr = struct.unpack("<I", prop_bytes(test_fdt, "/data", "nr_folios"))[0]
    assert len(info) == 8 * nr
    for (value,) in struct.iter_unpack("<Q", info):
        phys, order = value & ~(PAGE_SIZE - 1), value & (PAGE_SIZE - 1)
        assert order <= MAX_PAGE_ORDER
        folio = k1.kho.kho_restore_folio(phys)
        assert folio is not None and (folio.phys, folio.order) == (phys, order)


# -- kho_populate's memremap failures and x86 add_kho (spec §5 KHO boot steps 1 and 4, §7 x86) --

WARN_SIZE = "WARNING: CPU: 0 PID: 0 at mm/early_ioremap.c:124 __early_ioremap+0x0/0x0"
WARN_PAGES = "WARNING: CPU: 0 PID: 0 at mm/early_ioremap.c:139 __early_ioremap+0x0/0x0"


@only("x86_64")      # the sizes travel in x86 kho_data
@pytest.mark.parametrize(("fdt_addr", "fdt_size", "warn"), [
    (None, 0, WARN_SIZE),                          # zero size
    (None, 65 * PAGE_SIZE, WARN_PAGES),            # more than NR_FIX_BTMAPS (64) pages
    (1 << 63, (1 << 63) + 1, WARN_SIZE),           # wraps
    (0x3FFF, 64 * PAGE_SIZE, WARN_PAGES),          # 64 pages, but unaligned: 65 mapped
])
def test_unmappable_fdt_is_efault(fdt_addr: int | None, fdt_size: int, warn: str) -> None:
    m, k0 = boot()
    finalize(k0)
    load(k0)
    if fdt_addr is not None:
        patch_kho_setup_data(k0, 16, struct.pack("<Q", fdt_addr))
    fdt_addr = fdt_addr if fdt_addr is not None else k0.kho.ser.fdt.phys
    patch_kho_setup_data(k0, 24, struct.pack("<Q", fdt_size))
    lines = log(m.kexec())
    i = lines.index(f"KHO: setup: failed to memremap FDT (0x{fdt_addr:x})")
    assert lines[i - 4:i] == ["------------[ cut here ]------------", warn,
                              "[khofs: registers and call trace not simulated]",
                              "---[ end trace 0000000000000000 ]---"]
    assert lines[i + 1] == "KHO: disabling KHO revival: -14"
    assert FOUND not in lines


@only("x86_64")      # the sizes travel in x86 kho_data
def test_fdt_outside_ram_is_mapped_and_fails_the_header_check() -> None:
    """early_memremap maps any address; beyond RAM the bus reads all ones: FDT_ERR_BADMAGIC."""
    m, k0 = boot()
    finalize(k0)
    load(k0)
    patch_handover(k0, "fdt", 1 << 50)
    lines = kho_lines(m.kexec())
    i = lines.index("KHO: setup: handover FDT (0x4000000000000) is invalid: -9")
    assert lines[i + 1] == DISABLING


@only("x86_64")      # the sizes travel in x86 kho_data
@pytest.mark.parametrize(("scratch_size", "warn"), [(0, WARN_SIZE), (0x3000000, WARN_PAGES)])
def test_unmappable_scratch_array_is_efault(scratch_size: int, warn: str) -> None:
    m, k0 = boot()
    finalize(k0)
    load(k0)
    patch_kho_setup_data(k0, 40, struct.pack("<Q", scratch_size))
    k1 = m.kexec()
    lines = log(k1)
    (i,) = [i for i, line in enumerate(lines)
            if line.startswith("KHO: setup: failed to memremap scratch (phys=0x")
            and line.endswith(f", len={scratch_size})")]
    assert lines[i - 3] == warn
    assert lines[i + 1] == "KHO: disabling KHO revival: -14"
    assert {r.flag for r in regions(k1, "memory")} == {"NONE"}


@only("x86_64")      # the sizes travel in x86 kho_data
def test_scratch_array_outside_ram_is_refused_by_the_simulator() -> None:
    m, k0 = boot()
    finalize(k0)
    load(k0)
    patch_handover(k0, "scratch", 1 << 50)
    k1 = m.kexec()
    lines = kho_lines(k1)
    i = lines.index("KHO: setup: scratch area 0xffffffffffffffff+0xffffffffffffffff is outside RAM "
                    "[khofs: not checked by Linux]")
    assert lines[i + 1] == DISABLING
    assert {r.flag for r in regions(k1, "memory")} == {"NONE"}


@only("x86_64")
@pytest.mark.parametrize(("length", "size"), [(0, 0), (0xFFFFFFF0, 0xFFFFFFFFFFFFFFF0)])
def test_unmappable_kho_setup_data(length: int, size: int) -> None:
    """add_kho: data_len = len + 16 is a u32 and size = data_len - 16 a u64; early_memremap fails for a
    zero or wrapping size → add_kho's own unprefixed message, and kho_populate never runs."""
    m, k0 = boot()
    finalize(k0)
    load(k0)
    phys = patch_kho_setup_data(k0, 12, struct.pack("<I", length))
    lines = log(m.kexec())
    assert f"setup: failed to memremap kho data (0x{phys + 16:x}, 0x{size:x})" in lines
    assert not [line for line in lines if "disabling" in line or line == FOUND]


@only("x86_64")
def test_short_kho_setup_data_is_still_read_whole() -> None:
    """add_kho maps `len` bytes but reads the whole 32-byte kho_data: early_memremap maps whole pages,
    so a short but non-zero len (16 here) does not stop the hand-over in Linux."""
    m, k0 = boot()
    finalize(k0)
    load(k0)
    patch_kho_setup_data(k0, 12, struct.pack("<I", 16))
    k1 = m.kexec()
    assert FOUND in log(k1)
    assert "Revived memory reservation 'n1' from KHO" in log(k1)


def test_handover_fdt_larger_than_its_page_is_accepted_as_libfdt_does() -> None:
    """fdt_check_header() has no buffer size: a totalsize beyond the mapped page is not an error."""
    m = machine(mem="2G", nodes=1, cmdline="kho=on reserve_mem=1M:4k:n1")
    k = m.boot()
    k.debugfs.write("kho/out/finalize", b"1")
    m.physmem.write(k.kho.ser.fdt.phys + 4, struct.pack(">I", 0x2000))   # totalsize 8 KiB
    k.kexec_file_load(make_image("6.16"), None, k.cmdline, 4)
    k2 = m.kexec()
    assert "KHO: found kexec handover data. Will skip init for some devices" in k2.dmesg()
    assert "Revived memory reservation 'n1' from KHO" in k2.dmesg()
    assert len(k2.debugfs.read("kho/in/fdt")) == 0x2000


@only("x86_64")
def test_setup_data_is_reserved_as_kernel_memory() -> None:
    # memblock_x86_reserve_range_setup_data() uses memblock_reserve_kern(): the KHO entry the
    # old kernel wrote is RSV_KERN in the new kernel, so it counts towards the next scratch.
    m, k = boot("kho=on", scrub=False)     # the new kernel frees boot_params' page for reuse
    finalize(k)
    k2 = kexec(m)
    entries = setup_data(k2.physmem.read, k2.boot_params_phys)
    assert entries
    for sd in entries:
        end = sd.phys + 16 + sd.len
        holder = [r for r in regions(k2, "reserved") if r.base <= sd.phys and end <= r.end]
        assert [r.flag for r in holder] == ["RSV_KERN"], (hex(sd.phys), holder)
