"""Many folios across a kexec: multi-entry chunks, 100,000 folios, and 6.16's int-sized blocks.

The hand-over is checked from outside: folio contents read back from RAM, the chunk list
decoded by kho_common (not by the simulator's walker), memblock/reserved as debugfs prints it.
"""

import random

import pytest
from kho_common import (
    PAGE_SHIFT,
    PAGE_SIZE,
    POISON,
    arch,  # noqa: F401 - the fixture the test that also runs on arm64 uses
    boot,
    finalize,
    kexec,
    log,
    prop_u64,
    read_chunks,
    regions,
)

from sim.init.main import Kernel
from sim.machine import Machine
from sim.mm.page_alloc import Folio

MAX_ORDER_BLOCK = 10          # the page allocator's largest block: 4 MiB
BITMAP_SPAN_ORDER0 = 4096     # pages one 6.16 order-0 bitmap covers (512 bytes of bits): 16 MiB


def scattered_folios(k: Kernel, count: int, per_block: int, seed: int) -> list[Folio]:
    """`count` folios of orders 0-4 taken from 4 MiB blocks the page allocator hands out,
    `per_block` of them in each block, never two touching (so every one is its own region)."""
    rng = random.Random(seed)
    slot = (1 << MAX_ORDER_BLOCK) // per_block
    assert slot >= 32
    folios: list[Folio] = []
    while len(folios) < count:
        block = k.page_alloc.alloc_pages(MAX_ORDER_BLOCK)
        assert block is not None, "out of memory for the scenario"
        for i in range(min(per_block, count - len(folios))):
            order = rng.randrange(5)
            folios.append(Folio(block.pfn + i * slot + (rng.randrange(16 >> order) << order), order))
    return folios


def preserve(k: Kernel, folios: list[Folio]) -> None:
    for folio in folios:
        assert k.kho.kho_preserve_folio(folio) == 0


def chunk_shape(m: Machine, k: Kernel) -> dict[int, list[int]]:
    """Per order, the entry count of each chunk of the handed-over map (decoded independently)."""
    shape: dict[int, list[int]] = {}
    first = prop_u64(k.debugfs.read("kho/out/fdt"), "/", "preserved-memory-map")
    for chunk in read_chunks(m.physmem, first):
        shape.setdefault(chunk.order, []).append(len(chunk.elms))
    return shape


def rsv_nit(k: Kernel) -> set[tuple[int, int]]:
    return {(r.base, r.end) for r in regions(k, "reserved") if r.flag == "RSV_NIT"}


@pytest.mark.usefixtures("arch")         # on both architectures; the rest of the file runs x86 only
def test_folios_in_multi_entry_chunks_survive_byte_for_byte() -> None:
    """Order-0 folios 16 MiB apart fill about 300 bitmaps: a full chunk of 255 entries and a second.

    Expect every byte of every folio back after a scrubbing kexec, each folio restorable with
    its order and listed on its own as RSV_NIT in memblock/reserved.
    """
    m, k0 = boot(mem="8G", nodes=2)
    rng = random.Random(7)
    folios = []
    for _ in range(300):
        block = k0.page_alloc.alloc_pages(MAX_ORDER_BLOCK)
        assert block is not None
        folios.append(Folio(block.pfn + rng.randrange(1 << MAX_ORDER_BLOCK), 0))
        for _ in range(BITMAP_SPAN_ORDER0 // (1 << MAX_ORDER_BLOCK) - 1):   # skip to the next bitmap
            assert k0.page_alloc.alloc_pages(MAX_ORDER_BLOCK) is not None
    folios += scattered_folios(k0, 60, per_block=4, seed=8)
    preserve(k0, folios)
    contents = {f: rng.randbytes(f.size) for f in folios}
    for f, data in contents.items():
        m.physmem.write(f.phys, data)
    finalize(k0)
    shape = chunk_shape(m, k0)
    assert shape[0][0] == 255 and len(shape[0]) == 2, shape
    assert any(n > 1 for n in shape[1] + shape[2]), shape

    k1 = kexec(m)
    assert [f for f, data in contents.items() if m.physmem.read(f.phys, f.size) != data] == []
    assert [f for f in folios if k1.kho.kho_restore_folio(f.phys) != f] == []
    assert {(f.phys, f.phys + f.size) for f in folios} <= rsv_nit(k1)


def test_a_hundred_thousand_scattered_folios_survive_a_scrubbing_kexec() -> None:
    """100,000 folios of orders 0-4, 32 to a 4 MiB block, each filled with its own byte value.

    Expect every folio restorable with its order, its first and last bytes intact (a lost
    reservation is poisoned there), every byte intact in a sample of 500, and exactly one
    RSV_NIT region per folio.
    """
    m, k0 = boot(mem="16G", nodes=2)
    folios = scattered_folios(k0, 100_000, per_block=32, seed=9)
    values = [1 + i % 254 for i in range(len(folios))]
    values = [v + 1 if v >= POISON else v for v in values]     # never the poison byte
    for f, v in sorted(zip(folios, values, strict=True), key=lambda fv: fv[0].pfn):
        m.physmem.fill(f.phys, f.size, v)
    preserve(k0, folios)
    finalize(k0)
    k1 = kexec(m)

    restore = k1.kho.kho_restore_folio
    assert [f for f in folios if restore(f.phys) != f] == []
    edges = [(f, v) for f, v in zip(folios, values, strict=True)
             if m.physmem.read(f.phys, 8) != bytes([v]) * 8
             or m.physmem.read(f.phys + f.size - 8, 8) != bytes([v]) * 8]
    assert edges == []
    for i in random.Random(10).sample(range(len(folios)), 500):
        assert m.physmem.read(folios[i].phys, folios[i].size) == bytes([values[i]]) * folios[i].size
    assert {(f.phys, f.phys + f.size) for f in folios} <= rsv_nit(k1)


@pytest.mark.parametrize(("order", "size_line", "region"), [
    (19, "is 0xffffffff80000000", (4 << 30, (1 << 64) - 1)),    # INT_MIN, sign-extended, capped
    (20, "is 0x1,", (4 << 30, (4 << 30) + 1)),             # 1 << 32 taken modulo 32: one byte
])
def test_6_16_int_sz_overflow_is_reproduced_and_named(order: int, size_line: str,
                                                      region: tuple[int, int]) -> None:
    """kho_preserve_phys of a 2 GiB / 4 GiB aligned range at 4 GiB preserves one order-19 / 20 block.

    Expect the next kernel to reserve what `int sz = 1 << (order + PAGE_SHIFT)` makes of it:
    from 4 GiB to PHYS_ADDR_MAX for order 19 (split where earlier reservations of other nodes
    lie), one byte for order 20, with a khofs line.
    """
    m, k0 = boot(mem="16G", nodes=1)
    assert k0.kho.kho_preserve_phys(4 << 30, PAGE_SIZE << order) == 0
    finalize(k0)
    k1 = kexec(m)
    lines = [line for line in log(k1) if "deserialize_bitmap" in line]
    assert len(lines) == 1 and size_line in lines[0] and "[khofs: Linux 6.16 bug]" in lines[0], lines
    assert f"order {order}: int sz = 1 << {order + PAGE_SHIFT}" in lines[0]
    covered = sorted(r for r in rsv_nit(k1) if region[0] <= r[0] < region[1])
    assert covered[0][0] == region[0] and covered[-1][1] == region[1]
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False)), covered
