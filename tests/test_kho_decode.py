"""`khofs decode` and sim.kho_decode: hand-overs from the simulator, from pylibfdt, and corrupted ones.

The expected preserved ranges come from kho_common's own walk of RAM (the simulator's
hand-overs) or from the block list the test itself encoded (pylibfdt-built hand-overs laid
out as Linux 6.16 and 6.18 write them), never from the decoder under test.
"""

import io
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import libfdt
import pytest
from kho_common import arch, block_ranges, boot, finalize, kexec, preserved_blocks, prop_u64  # noqa: F401
from test_fs_harness import mounted

from khofs.cli import main
from khofs.decode import to_json, to_text
from sim.kho_decode import kho_decode

PAGE = 4096


def decode_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    status = main(["decode", *argv, "--json"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, json.loads(out)


def ranges_of(doc: dict) -> list[tuple[int, int]]:
    return [(r["start"], r["end"]) for r in doc["preserved_memory_map"]["ranges"]]


# -- the simulator's own hand-overs --

@pytest.mark.usefixtures("arch")         # on both architectures; the rest of the file runs x86 only
@pytest.mark.parametrize("version", ["6.16", "6.18"])
def test_decode_lists_exactly_the_preserved_ranges_of_the_chunk_list(version: str) -> None:
    """Expect the merged ranges of an independent walk, n1 as integers and both sub-FDTs."""
    m, k = boot(version=version, test_kho=True)
    finalize(k)
    root = k.debugfs.read("kho/out/fdt")
    first = prop_u64(root, "/", "preserved-memory-map")
    bits = 4096 * 8 if version == "6.18" else 4096
    d = kho_decode(root, m.physmem.read, m.physmem.size, version)
    assert d.problems == []
    assert d.mem_map is not None and d.mem_map.complete
    assert d.mem_map.ranges == block_ranges(preserved_blocks(m.physmem, first, bits))
    memblock = k.debugfs.read("kho/out/sub_fdts/memblock")
    assert d.reserve_mem() == [("n1", prop_u64(memblock, "/n1", "start"), 64 << 20)]
    subs = {c.name: sub.root.compatible for c in d.fdt.root.children for sub in c.sub_fdts.values()}
    assert subs == {"kho_test": "kho-test-v1", "memblock": "memblock-v1"}
    data = next(s.root for c in d.fdt.root.children if c.name == "kho_test" for s in c.sub_fdts.values())
    info = next(p for p in data.children[0].props if p.name == "folios_info")
    assert info.folios == [(f.phys, f.order) for f in k.test_kho.folios]


def test_decode_of_in_fdt_after_a_kexec_reports_the_freed_chunk_list() -> None:
    """Expect the sub-FDTs intact (preserved) but the chunk list poisoned: it was never preserved."""
    m, k = boot(test_kho=True)
    finalize(k)
    before = kho_decode(k.debugfs.read("kho/out/fdt"), m.physmem.read, m.physmem.size)
    first = prop_u64(k.debugfs.read("kho/out/fdt"), "/", "preserved-memory-map")
    k2 = kexec(m)
    after = kho_decode(k2.debugfs.read("kho/in/fdt"), m.physmem.read, m.physmem.size, "6.16")
    assert before.kernel_version == "6.16" and any("recognised" in n for n in before.notes)
    assert after.reserve_mem() == before.reserve_mem()
    assert after.problems == [f"preserved-memory-map: chunk 0 of the list at 0x{first:x}: preserved memory "
                              f"map chunk 0x{first:x} claims {0xaaaaaaaa} bitmaps"]
    assert any("memblock_free_all" in n for n in after.notes)


# -- hand-overs written the way Linux 6.16 and 6.18 write them, with pylibfdt --

def fdt_blob(build) -> bytes:
    sw = libfdt.FdtSw()
    sw.finish_reservemap()
    sw.begin_node("")
    build(sw)
    sw.end_node()
    fdt = sw.as_fdt()
    return bytes(fdt.as_bytearray()[:fdt.totalsize()])


class Ram:
    """A raw dump being written: file offset = physical address."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        with open(path, "wb") as f:
            f.truncate(size)

    def write(self, phys: int, data: bytes) -> None:
        with open(self.path, "r+b") as f:
            f.seek(phys)
            f.write(data)


# Preserved (phys, order) blocks: an order-0 run, single pages, an order-9 and an order-14 block.
BLOCKS = [(0x1200000 + i * PAGE, 0) for i in range(40)] + [(0x1400000, 0), (0x1402000, 0),
                                                           (0x1600000, 9), (0x4000000, 14)]
N1 = (0x4000000, 64 << 20)
FOLIOS = [(0x1600000, 9), (0x1400000, 0)]


def write_handover(tmp_path: Path, version: str, mem_size: int = 0x8000000) -> tuple[Path, Path, int]:
    """Root FDT file and RAM dump of a hand-over as `version`'s kernel lays it out.

    6.16/6.17: 512-byte kzalloc'd bitmaps (packed 8 to a page), a u64 folios_info;
    6.18: page bitmaps, a struct kho_vmalloc folios_info.  Returns (fdt, dump, first chunk).
    """
    ram = Ram(tmp_path / f"ram-{version}", mem_size)
    bits = PAGE * 8 if version == "6.18" else 4096
    bitmap_size = bits // 8
    alloc = [0x800000]

    def zalloc(size: int) -> int:            # kmalloc: power-of-two sizes are size aligned
        phys = alloc[0] = -(-alloc[0] // size) * size
        alloc[0] += size
        return phys

    # kho_mem_serialize: orders ascending, bitmap indices ascending, 255 per chunk.
    maps: dict[int, dict[int, int]] = {}
    for phys, order in BLOCKS:
        pfn_high = (phys >> 12) >> order
        maps.setdefault(order, {}).setdefault(pfn_high // bits, 0)
        maps[order][pfn_high // bits] |= 1 << (pfn_high % bits)
    chunks = []
    for order in sorted(maps):
        chunk = zalloc(PAGE)
        elms = b""
        for index in sorted(maps[order]):
            bitmap = zalloc(bitmap_size)
            ram.write(bitmap, maps[order][index].to_bytes(bitmap_size, "little"))
            elms += struct.pack("<QQ", (index * bits) << (order + 12), bitmap)
        chunks.append((chunk, order, elms))
    for i, (chunk, order, elms) in enumerate(chunks):
        nxt = chunks[i + 1][0] if i + 1 < len(chunks) else 0
        ram.write(chunk, struct.pack("<QII", nxt, order, len(elms) // 16) + elms)
    first = chunks[0][0]

    memblock_phys, test_phys, other_phys = 0x100000, 0x101000, 0x102000

    def memblock(sw) -> None:
        sw.property_string("compatible", "memblock-v1")
        sw.begin_node("n1")
        sw.property_string("compatible", "reserve-mem-v1")
        sw.property("start", struct.pack("<Q", N1[0]))
        sw.property("size", struct.pack("<Q", N1[1]))
        sw.end_node()
    ram.write(memblock_phys, fdt_blob(memblock))

    infos = b"".join(struct.pack("<Q", p | o) for p, o in FOLIOS)
    if version == "6.18":
        page, vchunk = 0x180000, 0x181000
        ram.write(page, infos)
        ram.write(vchunk, struct.pack("<QQ", 0, page))
        infos = struct.pack("<QIHH", vchunk, 1, 1, 0)

    def kho_test(sw) -> None:
        sw.property_string("compatible", "kho-test-v1")
        sw.property("magic", struct.pack("<I", 0x4B484F21))
        sw.begin_node("data")
        sw.property("nr_folios", struct.pack("<I", len(FOLIOS)))
        sw.property("folios_info", infos)
        sw.property("csum", struct.pack("<I", 0x1234))
        sw.end_node()
    ram.write(test_phys, fdt_blob(kho_test))

    def other(sw) -> None:                      # a KHO user khofs does not know
        sw.property_string("compatible", "luo-v1")
        sw.property("names", b"a\0bc\0")
        sw.property("cells", struct.pack(">II", 1, 2))
        sw.property("bytes", b"\1\2\3")
        sw.property("flag", b"")
    ram.write(other_phys, fdt_blob(other))

    def root(sw) -> None:
        sw.property_string("compatible", "kho-v1")
        sw.property("preserved-memory-map", struct.pack("<Q", first))
        for name, phys in (("kho_test", test_phys), ("memblock", memblock_phys), ("luo", other_phys)):
            sw.begin_node(name)
            sw.property("fdt", struct.pack("<Q", phys))
            sw.end_node()
    fdt = tmp_path / f"fdt-{version}"
    fdt.write_bytes(fdt_blob(root))
    return fdt, ram.path, first


def expected_ranges() -> list[tuple[int, int]]:
    return block_ranges({(p, o) for p, o in BLOCKS})


@pytest.mark.parametrize("version", ["6.16", "6.17", "6.18"])
def test_decode_of_real_machine_layouts_built_with_pylibfdt(tmp_path: Path, capsys, version: str) -> None:
    """Expect every block the test encoded, n1, both folios and the unknown sub-FDT, with no problems."""
    fdt, dump, first = write_handover(tmp_path, version)
    status, doc = decode_json(capsys, str(fdt), "--mem", str(dump), "--kernel-version", version)
    assert (status, doc["problems"]) == (0, [])
    assert doc["preserved_memory_map"]["first"] == first
    assert ranges_of(doc) == expected_ranges()
    assert doc["reserve_mem"] == [{"name": "n1", "start": N1[0], "size": N1[1]}]
    assert [(s["name"], s["compatible"]) for s in doc["sub_fdts"]] == \
        [("kho_test", "kho-test-v1"), ("memblock", "memblock-v1"), ("luo", "luo-v1")]
    test = doc["sub_fdts"][0]
    node = doc["fdt"]["root"]["children"][0]["properties"][0]["sub_fdt"]["root"]["children"][0]
    info = next(p for p in node["properties"] if p["name"] == "folios_info")
    assert [(f["phys"], f["order"]) for f in info["folios"]] == FOLIOS and test["phys"] == 0x101000


@pytest.mark.parametrize("version", ["6.16", "6.18"])
def test_decode_recognises_the_layout_from_the_list(tmp_path, capsys, version: str) -> None:
    """Expect each layout named from the bitmaps alone, and the blocks the test encoded."""
    fdt, dump, _ = write_handover(tmp_path, version)
    status, doc = decode_json(capsys, str(fdt), "--mem", str(dump))
    assert (status, doc["kernel_version"], ranges_of(doc)) == (0, version, expected_ranges())
    assert doc["notes"][0].startswith(version) and doc["notes"][0].endswith("recognised")


def test_decode_without_ram_says_what_it_skipped(tmp_path, capsys) -> None:
    fdt, dump, first = write_handover(tmp_path, "6.16")
    status, doc = decode_json(capsys, str(fdt))
    assert (status, doc["preserved_memory_map"], doc["problems"]) == (0, None, [])
    note = f"chunk list at 0x{first:x} not followed (no RAM: give --mem FILE or a mount)"
    assert note in " ".join(doc["notes"])
    assert doc["fdt"]["root"]["properties"][1] == {"name": "preserved-memory-map", "kind": "mem-map",
                                                   "value": first, "raw": struct.pack("<Q", first).hex()}


def test_unknown_sub_fdts_print_as_dtc_prints_them(tmp_path: Path, capsys) -> None:
    """The dtc-style fallback: each property line of the unknown node equals dtc's."""
    fdt, dump, _ = write_handover(tmp_path, "6.16")
    assert main(["decode", str(fdt), "--mem", str(dump)]) == 0
    ours = capsys.readouterr().out
    blob = Path(dump).read_bytes()[0x102000:0x103000]
    (tmp_path / "luo.dtb").write_bytes(blob[:struct.unpack(">I", blob[4:8])[0]])
    theirs = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(tmp_path / "luo.dtb")],
                            capture_output=True, text=True, check=True).stdout
    props = [line.strip() for line in theirs.splitlines() if line.strip().endswith(";") and "=" in line
             or line.strip() == "flag;"]
    assert len(props) == 5
    for line in props:
        assert "\t\t\t" + line + "\n" in ours, line


# -- corrupted hand-overs: each reported precisely, never a traceback --

def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_corrupt_chunk_lists_name_the_chunk_and_the_fault(tmp_path: Path, capsys) -> None:
    fdt, dump, first = write_handover(tmp_path, "6.16")
    cases = [
        (lambda: patch(dump, first, struct.pack("<Q", first)), f"loops back to chunk 0x{first:x}"),
        (lambda: patch(dump, first + 12, struct.pack("<I", 300)), f"chunk 0x{first:x} claims 300 bitmaps"),
        (lambda: patch(dump, first + 24, struct.pack("<Q", 0x7FFFF000)), "bitmap 0x7ffff000 is outside RAM"),
        (lambda: patch(dump, first, struct.pack("<Q", 0x1234)), "chunk 0x1234 is outside RAM or misaligned"),
    ]
    pristine = dump.read_bytes()
    for corrupt, message in cases:
        dump.write_bytes(pristine)
        corrupt()
        status, doc = decode_json(capsys, str(fdt), "--mem", str(dump), "--kernel-version", "6.16")
        assert status == 2
        assert len(doc["problems"]) == 1 and message in doc["problems"][0], doc["problems"]
        assert doc["problems"][0].startswith("preserved-memory-map: chunk ")
        assert doc["preserved_memory_map"]["complete"] is False


def test_corrupt_fdts_name_the_node_and_the_fault(tmp_path: Path, capsys) -> None:
    fdt, dump, _ = write_handover(tmp_path, "6.16")
    good = fdt.read_bytes()
    fdt.write_bytes(b"\0" * 4 + good[4:])
    status, doc = decode_json(capsys, str(fdt), "--mem", str(dump))
    assert (status, doc["problems"]) == (2, ["root FDT: not a valid FDT: -FDT_ERR_BADMAGIC (-9)"])
    fdt.write_bytes(good[:len(good) // 2])
    status, doc = decode_json(capsys, str(fdt), "--mem", str(dump))
    assert status == 2 and doc["problems"] == ["root FDT: not a valid FDT: -FDT_ERR_TRUNCATED (-8)"]
    # memblock's fdt pointer aimed at zeroed RAM, then shortened to 4 bytes.
    at = good.index(struct.pack("<Q", 0x100000), 0x38)      # in the structure block, not the header
    fdt.write_bytes(good[:at] + struct.pack("<Q", 0x200000) + good[at + 8:])
    status, doc = decode_json(capsys, str(fdt), "--mem", str(dump))
    assert status == 2 and doc["problems"] == [
        "sub-FDT /memblock/fdt at 0x200000: not a valid FDT: -FDT_ERR_BADMAGIC (-9)"]
    assert doc["reserve_mem"] == []

    def short(sw) -> None:
        sw.property_string("compatible", "kho-v1")
        sw.property("preserved-memory-map", b"\0\0\0\0")
        sw.begin_node("memblock")
        sw.property("fdt", b"\0\0\x10\0")
        sw.end_node()
    fdt.write_bytes(fdt_blob(short))
    status, doc = decode_json(capsys, str(fdt), "--mem", str(dump))
    assert status == 2 and doc["problems"] == [
        "root FDT /: property preserved-memory-map is 4 bytes, 8 expected (mem-map)",
        "root FDT /memblock: property fdt is 4 bytes, 8 expected (fdt)",
        "root FDT /: no 8-byte preserved-memory-map (the kernel logs 'KHO: failed to get preserved "
        "memory bitmaps')"]


def test_decode_of_a_missing_file_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["decode", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


# -- through a mount: RAM from its dev/mem, the version from its log --

def test_decode_through_a_mount_follows_dev_mem(tmp_path: Path) -> None:
    with mounted(tmp_path, test_kho=True) as (m, mnt):
        (mnt / "sys/kernel/debug/kho/out/finalize").write_text("1\n")
        r = subprocess.run([sys.executable, "-m", "khofs.cli", "decode", "--json"], capture_output=True,
                           text=True, env={**os.environ, "KHOFS_ROOT": str(mnt)}, timeout=60)
        assert (r.returncode, r.stderr) == (0, "")
        doc = json.loads(r.stdout)
        k = m.kernel
        first = prop_u64(k.debugfs.read("kho/out/fdt"), "/", "preserved-memory-map")
        assert doc["ram"] == f"{mnt}/dev/mem" and doc["source"].endswith("kho/out/fdt")
        assert ranges_of(doc) == block_ranges(preserved_blocks(m.physmem, first, 4096))
        assert [s["name"] for s in doc["sub_fdts"]] == ["kho_test", "memblock"]


def test_a_looping_vmalloc_chunk_list_is_reported(tmp_path: Path, capsys) -> None:
    fdt, dump, _ = write_handover(tmp_path, "6.18")
    patch(dump, 0x181000, struct.pack("<QQ", 0x181000, 0))        # next = itself, no pages
    status, doc = decode_json(capsys, str(fdt), "--mem", str(dump), "--kernel-version", "6.18")
    assert status == 2 and doc["problems"] == [
        "sub-FDT /kho_test/fdt at 0x101000 /data: vmalloc chunk list loops back to 0x181000"]


@pytest.mark.parametrize("version", ["6.16", "6.18"])
def test_random_corruption_never_raises(tmp_path: Path, version: str) -> None:
    """Bytes flipped in the root blob, the sub-FDTs, chunks and bitmaps (a fixed seed, so a failure
    replays): the decoder reports, and both renderers take whatever it reports."""
    fdt, dump, first = write_handover(tmp_path, version)
    blob, ram = fdt.read_bytes(), dump.read_bytes()
    rng = random.Random(version)
    for _ in range(400):
        b, patches = bytearray(blob), {}
        for _ in range(rng.randint(1, 6)):
            if rng.random() < 0.6:
                b[rng.randrange(len(b))] = rng.randrange(256)
            else:
                base = rng.choice([first, 0x100000, 0x101000, 0x102000, 0x180000, 0x181000, 0x801000])
                patches[base + rng.randrange(64)] = rng.randrange(256)

        def read(phys: int, size: int, patches=patches) -> bytes:
            if phys + size > len(ram):
                raise ValueError("past the end of the dump")
            out = bytearray(ram[phys:phys + size])
            for at, value in patches.items():
                if phys <= at < phys + size:
                    out[at - phys] = value
            return bytes(out)
        d = kho_decode(bytes(b), read, len(ram))
        to_text(io.StringIO(), d, "fuzz", None)
        json.dumps(to_json(d, "fuzz", None, None))
