"""kernel_version="6.18" (and 6.17 where it shares a row) changes exactly the rows of spec §0/§10.

Each test checks one row against the spec and, where it helps, the 6.16 behaviour it replaces;
the last ones check that the rest (FDT formats, greedy split) stays 6.16.
"""

import struct

import pytest
from kho_common import (
    BASE_SEGMENTS,
    CMDLINE,
    PAGE_SHIFT,
    PAGE_SIZE,
    SCRATCH_LEN,
    arch,  # noqa: F401 - the fixture every test here runs under
    block_ranges,
    boot,
    current_arch,
    finalize,
    greedy_split,
    hexlines,
    kexec,
    load,
    log,
    preserved_blocks,
    prop_bytes,
    prop_u64,
    read_chunks,
    regions,
    union,
)
from spec_vectors import ROOT_VECTOR

from sim.init.main import Kernel

pytestmark = pytest.mark.usefixtures("arch")

PRESERVE_BITS_618 = PAGE_SIZE * 8          # 32768
KHO_VMALLOC_SIZE = (PAGE_SIZE - 8) // 8    # 511
SCRATCH_FAIL = "KHO: Failed to reserve scratch area, disabling kexec handover"


def _get_order(size: int) -> int:
    return max(0, (size - 1).bit_length() - PAGE_SHIFT)


def _vmalloc(k: Kernel, preservation: bytes) -> tuple[list[int], int, int, int, int]:
    """struct kho_vmalloc (16 B) and its chunk list, from RAM: (pages, first, total_pages, flags, order)."""
    first, total, flags, order = struct.unpack("<QIHH", preservation)
    pages, chunk = [], first
    while chunk:
        raw = k.physmem.read(chunk, PAGE_SIZE)
        for i in range(KHO_VMALLOC_SIZE):
            phys = struct.unpack_from("<Q", raw, 8 + 8 * i)[0]
            if not phys:
                break
            pages.append(phys)
        chunk = struct.unpack_from("<Q", raw)[0]
    return pages, first, total, flags, order


@pytest.fixture(scope="module")
def k618() -> tuple[Kernel, bytes, bytes]:
    """A finalized 6.18 kernel with the reference layout and test_kho: (kernel, out/fdt, kho_test FDT)."""
    _, k = boot(version="6.18", test_kho=True)
    finalize(k)
    return k, k.debugfs.read("kho/out/fdt"), k.debugfs.read("kho/out/sub_fdts/kho_test")


def test_folios_info_is_a_16_byte_kho_vmalloc(k618: tuple[Kernel, bytes, bytes]) -> None:
    """6.18 test_kho: folios_info = struct kho_vmalloc of a vmalloc_array(nr_folios, 8)."""
    k, _, test_fdt = k618
    nr = struct.unpack("<I", prop_bytes(test_fdt, "/data", "nr_folios"))[0]
    info = prop_bytes(test_fdt, "/data", "folios_info")
    assert len(info) == 16
    pages, first, total, flags, order = _vmalloc(k, info)
    assert first % PAGE_SIZE == 0
    assert total == -(-nr * 8 // PAGE_SIZE)
    assert (flags, order) == (0x1, 0)                     # KHO_VMALLOC_ALLOC, order-0 pages
    assert len(pages) == total
    data = b"".join(k.physmem.read(p, PAGE_SIZE) for p in pages)[:nr * 8]
    infos = [v for (v,) in struct.iter_unpack("<Q", data)]
    assert sum(PAGE_SIZE << (v & (PAGE_SIZE - 1)) for v in infos) == 8 << 20     # max_mem, all used


def test_chunk_list_has_page_sized_bitmaps(k618: tuple[Kernel, bytes, bytes]) -> None:
    """PRESERVE_BITS = 32768: each bitmap is a whole zeroed page, phys_start = index * 32768 << (order + 12),
    and the preserved set is exactly what the users preserved (decoded independently)."""
    k, out, test_fdt = k618
    pmm = prop_u64(out, "/", "preserved-memory-map")
    chunks = read_chunks(k.physmem, pmm)
    assert [c.order for c in chunks] == sorted(c.order for c in chunks)
    bitmaps = [b for c in chunks for _, b in c.elms]
    assert all(b % PAGE_SIZE == 0 for b in bitmaps) and len(set(bitmaps)) == len(bitmaps)
    for c in chunks:
        assert c.phys % PAGE_SIZE == 0 and len(c.elms) <= 255
        assert all(start % (PRESERVE_BITS_618 << (c.order + PAGE_SHIFT)) == 0 for start, _ in c.elms)
        assert k.physmem.read(c.phys + 16 + 16 * len(c.elms), PAGE_SIZE - 16 - 16 * len(c.elms)) == \
            bytes(PAGE_SIZE - 16 - 16 * len(c.elms))
    blocks = preserved_blocks(k.physmem, pmm, PRESERVE_BITS_618)

    n1 = k.reserve_mem.reserve_mem_find_by_name("n1")
    assert n1 is not None
    nr = struct.unpack("<I", prop_bytes(test_fdt, "/data", "nr_folios"))[0]
    pages, first, *_ = _vmalloc(k, prop_bytes(test_fdt, "/data", "folios_info"))
    data = b"".join(k.physmem.read(p, PAGE_SIZE) for p in pages)[:nr * 8]
    folios = {(v & ~(PAGE_SIZE - 1), v & (PAGE_SIZE - 1)) for (v,) in struct.iter_unpack("<Q", data)}
    assert k.kho.ser.fdt is not None
    expected = ({(k.kho.ser.fdt.phys, 0), (prop_u64(out, "/memblock", "fdt"), 0),
                 (prop_u64(out, "/kho_test", "fdt"), _get_order(nr * 8 + PAGE_SIZE)), (first, 0)}
                | {(p, 0) for p in pages} | folios | greedy_split(*n1))
    assert blocks == expected
    # A 512-byte bitmap could not hold these: some bit lies beyond 4096.
    assert any(((p >> (PAGE_SHIFT + o)) % PRESERVE_BITS_618) >= 4096 for p, o in blocks)


def test_memblock_preserves_through_kho_preserve_pages() -> None:
    """6.18 memblock calls kho_preserve_pages(page, nr_pages), never kho_preserve_phys."""
    _, k = boot(version="6.18")
    calls: list[tuple[int, int]] = []
    pages = k.kho.kho_preserve_pages

    def spy(pfn: int, nr_pages: int) -> int:
        calls.append((pfn, nr_pages))
        return pages(pfn, nr_pages)

    def forbidden(phys: int, size: int) -> int:
        raise AssertionError("kho_preserve_phys used by a 6.18 kernel")

    k.kho.kho_preserve_pages = spy                  # type: ignore[method-assign]
    k.kho.kho_preserve_phys = forbidden             # type: ignore[method-assign]
    finalize(k)
    n1 = k.reserve_mem.reserve_mem_find_by_name("n1")
    assert n1 is not None
    assert calls == [(n1[0] >> PAGE_SHIFT, n1[1] >> PAGE_SHIFT)]


@pytest.mark.parametrize(("version", "finalized", "kho"), [
    ("6.16", False, True), ("6.16", True, True),
    ("6.17", False, False), ("6.17", True, True),
    ("6.18", False, False), ("6.18", True, True),
])
def test_fill_kimage_only_when_finalized_from_6_17(version: str, finalized: bool, kho: bool) -> None:
    """kho: only fill kimage if KHO is finalized (6.17.4+, 6.18): no scratch segment, no FDT phys."""
    _, k = boot(version=version)
    if finalized:
        finalize(k)
    load(k)
    image = k.kexec.kexec_image
    assert image is not None
    assert len(image.segments) == BASE_SEGMENTS[current_arch()] + (1 if kho else 0)
    assert bool(image.kho_fdt) == kho and (image.kho_scratch is not None) == kho


def test_618_to_618_kexec_restores_test_kho_and_keeps_n1() -> None:
    m, k0 = boot(version="6.18", test_kho=True)
    n1 = k0.reserve_mem.reserve_mem_find_by_name("n1")
    assert n1 is not None
    m.physmem.write(n1[0], b"KHO!" * (n1[1] // 4))
    finalize(k0)
    out = k0.debugfs.read("kho/out/fdt")
    blocks = preserved_blocks(m.physmem, prop_u64(out, "/", "preserved-memory-map"), PRESERVE_BITS_618)
    k1 = kexec(m)
    lines = log(k1)
    assert "test_kho: KHO restore succeeded" in lines
    assert "test_kho: KHO restore failed" not in lines
    assert "Revived memory reservation 'n1' from KHO" in lines
    assert m.physmem.read(*n1) == b"KHO!" * (n1[1] // 4)
    assert k1.debugfs.read("kho/in/fdt") == out
    nit = union([(r.base, r.end) for r in regions(k1, "reserved") if r.flag == "RSV_NIT"])
    assert nit == block_ranges(blocks)
    # KHOP: page->private is cleared by a restore, so a second one fails.
    memblock_fdt = prop_u64(out, "/memblock", "fdt")
    first = k1.kho.kho_restore_folio(memblock_fdt)
    assert first is not None and first.order == 0
    assert k1.kho.kho_restore_folio(memblock_fdt) is None
    assert k1.kho.kho_restore_folio(k1.kho.kho_in_fdt_phys) is None       # kho_memory_init took it
    test_fdt = k1.debugfs.read("kho/in/sub_fdts/kho_test")
    pages, *_ = _vmalloc(k1, prop_bytes(test_fdt, "/data", "folios_info"))
    assert pages and all(k1.kho.kho_restore_folio(p) is None for p in pages)   # test_kho took them


@pytest.mark.parametrize(("version", "logged"), [("6.16", False), ("6.17", True), ("6.18", True)])
def test_scratch_reservation_failure_is_logged_from_6_17(version: str, logged: bool) -> None:
    """Scratch larger than RAM: KHO is disabled (no debugfs); 6.16 says nothing."""
    _, k = boot(cmdline="kho=on kho_scratch=16G,16G,16G", version=version)
    assert (SCRATCH_FAIL in log(k)) == logged
    assert not [line for line in log(k) if "Failed to reserve" in line and line != SCRATCH_FAIL]
    assert not k.debugfs.exists("kho")
    assert not k.kho.kho_is_enabled()


@pytest.mark.parametrize(("version", "arg", "accepted", "scratch_len"), [
    ("6.18", "0,512M,256M", True, [0, 512 << 20, 256 << 20, 256 << 20]),
    ("6.16", "0,512M,256M", False, None),
    ("6.18", "0,0,0", False, None),
    ("6.18", "16M,512M,256Mx", False, None),
    ("6.16", "16M,512M,256Mx", True, SCRATCH_LEN),
])
def test_kho_scratch_rules_at_boot(version: str, arg: str, accepted: bool,
                                   scratch_len: list[int] | None) -> None:
    """6.18: zeros allowed if the total is not, trailing text rejected; 6.16: all non-zero, tail ignored.
    A rejected option leaves the 200% default scale (so no zero-sized lowmem area)."""
    _, k = boot(cmdline=f"kho=on kho_scratch={arg}", version=version)
    assert ("Malformed early option 'kho_scratch'" in log(k)) != accepted
    lens = hexlines(k, "kho/out/scratch_len")
    if accepted:
        assert lens == scratch_len
    else:
        assert len(lens) == 4 and all(n and n % (2 << 20) == 0 for n in lens)


# -- what 6.18 does not change --

def _expected_root(pmm: int, memblock: int) -> bytes:
    raw = bytearray(ROOT_VECTOR)
    raw[0x68:0x70] = struct.pack("<Q", pmm)
    raw[0x8C:0x94] = struct.pack("<Q", memblock)
    return bytes(raw)


def test_root_vector_patching_is_an_identity_on_the_vector() -> None:
    """Guard the helper: patching the vector's own values in gives the vector back."""
    assert len(ROOT_VECTOR) == 0xC4
    assert _expected_root(0x116BE4000, 0x100151000) == ROOT_VECTOR


@pytest.mark.parametrize("version", ["6.16", "6.18"])
def test_fdt_formats_are_unchanged(version: str) -> None:
    """Root and memblock FDT layouts are the 6.16 ones (spec §2: unchanged through 6.18)."""
    _, k = boot(cmdline=CMDLINE, version=version)
    finalize(k)
    out = k.debugfs.read("kho/out/fdt")
    pmm, memblock_phys = prop_u64(out, "/", "preserved-memory-map"), prop_u64(out, "/memblock", "fdt")
    assert out == _expected_root(pmm, memblock_phys)
    memblock = k.debugfs.read("kho/out/sub_fdts/memblock")
    n1 = k.reserve_mem.reserve_mem_find_by_name("n1")
    assert n1 is not None
    assert prop_u64(memblock, "/n1", "start") == n1[0] and prop_u64(memblock, "/n1", "size") == n1[1]
    assert len(memblock) == struct.unpack(">I", memblock[4:8])[0]


def test_memblock_fdt_is_the_same_bytes_in_6_16_and_6_18() -> None:
    fdts = []
    for version in ("6.16", "6.18"):
        _, k = boot(cmdline=CMDLINE, version=version)
        finalize(k)
        fdts.append(k.debugfs.read("kho/out/sub_fdts/memblock"))
    assert fdts[0] == fdts[1]
