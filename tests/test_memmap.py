"""`khofs memmap` and sim.memmap: the map a machine's files describe, as text, JSON and SVG.

Expected ranges come from debugfs as kho_common reads it and from kho_common's own walk of
the chunk list, not from sim.memmap.  The SVG is checked structurally (1 TiB, 8 nodes) and
against one golden file drawn from a hand-written map (so it does not move with the boot).
"""

import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from kho_common import (
    block_ranges,
    boot,
    finalize,
    kexec,
    load,
    preserved_blocks,
    prop_u64,
    scratch_areas,
)
from test_fs_harness import mounted

from khofs.memmap import to_svg, to_text
from sim.machine import Machine
from sim.memmap import MapRange, MemoryMap, handed_over_map, memory_map

GOLDEN = Path(__file__).parent / "golden" / "memmap.svg"
SVG = "{http://www.w3.org/2000/svg}"


def files_of(m: Machine):
    """read_text over the running kernel, with the paths the mount serves (what a reader sees)."""
    def read_text(path: str) -> str | bytes | None:
        k = m.kernel
        try:
            if path == "proc/iomem":
                return k.iomem()
            if path == "proc/sys/kernel/arch":
                return f"{k.arch.uname_machine}\n"
            if path == "khofs/dmesg":
                return k.dmesg()
            if path.startswith("sys/kernel/debug/"):
                return k.debugfs.read(path.removeprefix("sys/kernel/debug/"))
        except OSError:
            return None
        return None
    return read_text


def spans(mm: MemoryMap, layer: str) -> list[tuple[int, int]]:
    return [(r.start, r.end) for r in mm.layer(layer)]


def test_the_map_of_a_finalized_machine() -> None:
    """Expect the e820 RAM, both nodes, every scratch area, the image, n1 and the walked preserved ranges."""
    m, k = boot(test_kho=True)
    finalize(k)
    mm = memory_map(files_of(m), m.physmem.read)
    assert mm.end == 10 << 30
    assert [r.label for r in mm.layer("node")] == ["node 0", "node 1"]
    assert sorted(spans(mm, "scratch")) == sorted(scratch_areas(k))
    assert [r.label for r in mm.layer("scratch")] == ["scratch lowmem", "scratch global", "scratch node 0",
                                                      "scratch node 1"]
    assert spans(mm, "kernel") == [(16 << 20, 48 << 20)]
    memblock = k.debugfs.read("kho/out/sub_fdts/memblock")
    n1 = prop_u64(memblock, "/n1", "start")
    assert [(r.label, r.start, r.size) for r in mm.layer("reserve_mem")] == [("n1", n1, 64 << 20)]
    first = prop_u64(k.debugfs.read("kho/out/fdt"), "/", "preserved-memory-map")
    assert spans(mm, "preserved") == block_ranges(preserved_blocks(m.physmem, first, 4096))
    assert [r.label for r in mm.layer("fdt")] == ["FDT kho_test", "FDT memblock"]
    assert ("System RAM", 0x100000000, 10 << 30) in [(r.label, r.start, r.end) for r in mm.layer("e820")]
    assert "hole" in [r.label for r in mm.layer("e820")]
    assert mm.layer("revived") == []


def test_before_and_after_a_kexec() -> None:
    m, k = boot(test_kho=True)
    assert handed_over_map(files_of(m), m.physmem.read) is None
    finalize(k)
    before_kexec = memory_map(files_of(m), m.physmem.read)
    k2 = kexec(m)
    before = handed_over_map(files_of(m), m.physmem.read)
    after = memory_map(files_of(m), m.physmem.read)
    assert before is not None
    # What the old kernel preserved, as the new one read it, is what the old one's list said.
    assert spans(before, "preserved") == spans(before_kexec, "preserved")
    assert spans(before, "reserve_mem") == spans(before_kexec, "reserve_mem")
    assert spans(before, "scratch") == spans(before_kexec, "scratch") == spans(after, "scratch")
    assert [r.label for r in after.layer("revived")][0] == "reserve_mem n1"
    assert spans(after, "revived")[1:] == spans(before_kexec, "preserved")
    assert spans(after, "kernel") != spans(before_kexec, "kernel")     # the new image lies in scratch
    assert k2.kho.kho_in_fdt_phys


def test_svg_of_a_1_tib_8_node_machine_shows_every_node_scratch_area_and_1_mib_region() -> None:
    m = Machine(mem="1T", nodes=8, cmdline="kho=on reserve_mem=1m:4k:tiny reserve_mem=64m:4k:n1")
    k = m.boot()
    finalize(k)
    svg = ET.fromstring(to_svg([memory_map(files_of(m), m.physmem.read)]))
    rects = {}
    for rect in svg.iter(f"{SVG}rect"):
        if rect.get("data-label"):
            rects.setdefault(rect.get("class"), []).append(rect)
    assert [r.get("data-label") for r in rects["node"]] == [f"node {i}" for i in range(8)]
    assert len(rects["scratch"]) == 10 == len(scratch_areas(k))
    reserve = {r.get("data-label"): r for r in rects["reserve_mem"]}
    assert set(reserve) == {"tiny", "n1"}
    assert float(reserve["tiny"].get("width")) >= 8        # 1 MiB of 1 TiB, still visible
    for group in rects.values():
        for r in group:
            assert 200 <= float(r.get("x")) and float(r.get("x")) + float(r.get("width")) <= 1400 - 69
    assert float(svg.get("width")) == 1400 and "legend" in "".join(svg.itertext())


def test_100k_scattered_ranges_are_drawn_as_at_most_200_bars_per_lane() -> None:
    """Expect the text to keep every range but the SVG to coalesce them, leaving 1 MiB visible."""
    mm = MemoryMap("scattered", 1 << 40)
    mm.ranges = [MapRange("e820", 0, 1 << 40, "System RAM"),
                 MapRange("reserve_mem", 1 << 39, (1 << 39) + (1 << 20), "tiny")]
    mm.ranges += [MapRange("preserved", (1 << 30) + i * 8192, (1 << 30) + i * 8192 + 4096, "preserved")
                  for i in range(100_000)]
    svg = ET.fromstring(to_svg([mm]))
    bars = [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "preserved"]
    assert len(bars) <= 200
    assert sum(int(r.get("data-end")) - int(r.get("data-start")) for r in bars) >= 100_000 * 4096
    tiny = next(r for r in svg.iter(f"{SVG}rect") if r.get("data-label") == "tiny")
    assert float(tiny.get("width")) >= 8
    out = io.StringIO()
    to_text(out, mm)
    assert out.getvalue().count("  preserved\n") == 100_000


def hand_written_map() -> MemoryMap:
    mm = MemoryMap("a hand-written map", 0x280000000, firmware="e820")
    mm.ranges = [MapRange("e820", 0, 0x80000000, "System RAM"),
                 MapRange("e820", 0x80000000, 0x100000000, "hole"),
                 MapRange("e820", 0x100000000, 0x280000000, "System RAM"),
                 MapRange("node", 0x1000, 0x180000000, "node 0"),
                 MapRange("node", 0x180000000, 0x280000000, "node 1"),
                 MapRange("reserved", 0x1000000, 0x3000000, "RSV_KERN nid 0"),
                 MapRange("kernel", 0x1000000, 0x3000000, "kernel image"),
                 MapRange("scratch", 0x7b000000, 0x7c000000, "scratch lowmem"),
                 MapRange("preserved", 0x278000000, 0x27c000000, "preserved"),
                 MapRange("reserve_mem", 0x278000000, 0x27c000000, "n1")]
    return mm


def test_svg_golden() -> None:
    """The renderer's output for a fixed map, byte for byte (regenerate: KHOFS_REGEN_GOLDEN=1)."""
    svg = to_svg([hand_written_map()])
    if os.environ.get("KHOFS_REGEN_GOLDEN"):
        GOLDEN.write_text(svg)
    assert svg == GOLDEN.read_text()


def test_text_lists_one_line_per_range_with_sizes() -> None:
    out = io.StringIO()
    to_text(out, hand_written_map())
    lines = out.getvalue().splitlines()
    assert "  0x0000000278000000-0x000000027bffffff      64 MiB  n1" in lines
    assert "  0x0000000080000000-0x00000000ffffffff       2 GiB  hole" in lines
    assert len([line for line in lines if line.startswith("  0x")]) == 10


def khofs(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "khofs.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "KHOFS_ROOT": str(root)}, timeout=60)


def test_memmap_through_a_mount(tmp_path: Path) -> None:
    with mounted(tmp_path) as (m, mnt):
        r = khofs(mnt, "memmap", "--before-after")
        assert (r.returncode, r.stderr) == (1, "khofs: memmap --before-after: this kernel did not boot "
                                               "from a KHO hand-over (no kho/in)\n")
        (mnt / "sys/kernel/debug/kho/out/finalize").write_text("1\n")
        r = khofs(mnt, "memmap", "--json", "--svg", str(tmp_path / "map.svg"))
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        labels = {(x["layer"], x["label"]) for x in doc["ranges"]}
        assert {("e820", "System RAM"), ("e820", "hole"), ("reserve_mem", "n1"), ("node", "node 0"),
                ("node", "node 1"), ("scratch", "scratch global")} <= labels
        assert ET.parse(tmp_path / "map.svg").getroot().tag == f"{SVG}svg"
        load(m.kernel)
        m.kexec()
        r = khofs(mnt, "memmap", "--before-after", "--svg", str(tmp_path / "both.svg"))
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("# previous kernel (from the hand-over)") and "\n# this kernel" in r.stdout
        titles = [t.text for t in ET.parse(tmp_path / "both.svg").getroot().iter(f"{SVG}text")
                  if t.get("class") == "panel"]
        assert titles[:2] == ["previous kernel (from the hand-over)", "this kernel"]


def test_arm64_firmware_lane_is_the_device_tree_memory_not_e820(tmp_path: Path) -> None:
    """arm64 has no e820: its RAM comes from the DT /memory nodes (/proc/iomem's top level), and
    text, JSON and SVG name the lane so."""
    with mounted(tmp_path, arch="arm64", mem="8G") as (_, mnt):
        text = khofs(mnt, "memmap")
        doc = khofs(mnt, "memmap", "--json", "--svg", str(tmp_path / "map.svg"))
    assert (text.returncode, doc.returncode) == (0, 0), text.stderr + doc.stderr
    assert "dt-memory: firmware map (device tree /memory nodes, as /proc/iomem shows them): " \
           "System RAM, reserved, holes" in text.stdout.splitlines()
    assert "e820" not in text.stdout
    firmware = [(x["start"], x["end"], x["label"]) for x in json.loads(doc.stdout)["ranges"]
                if x["layer"] == "dt-memory"]
    assert firmware[:2] == [(0, 0x40000000, "hole"), (0x40000000, 0x140000000, "System RAM")]
    assert not [x for x in json.loads(doc.stdout)["ranges"] if x["layer"] in ("e820", "iomem")]
    svg = ET.parse(tmp_path / "map.svg").getroot()
    assert {r.get("data-label") for r in svg.iter(f"{SVG}rect") if r.get("class") == "dt-memory"} == \
        {"hole", "System RAM"}
    lanes = [t[0].tail for t in svg.iter(f"{SVG}text") if t.get("class") == "layer"]     # after <title>
    assert lanes[0] == "dt-memory"
    assert "Reserved (dt-memory)" in [t.text for t in svg.iter(f"{SVG}text")]
    assert "e820" not in ET.tostring(svg, encoding="unicode")


def test_memmap_without_a_machine_is_one_line(tmp_path: Path) -> None:
    r = khofs(tmp_path, "memmap")
    assert (r.returncode, r.stderr.count("\n"), "Traceback" in r.stderr) == (1, 1, False)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/iomem").write_text("00000000-00000000 : Reserved\n")   # what non-root reads
    r = khofs(tmp_path, "memmap", "--svg", str(tmp_path / "x.svg"))
    assert (r.returncode, r.stderr) == (1, f"khofs: no System RAM in {tmp_path}/proc/iomem (reading it "
                                           "needs root on a real box)\n")


def test_the_map_of_a_618_machine_walks_page_bitmaps() -> None:
    m, k = boot(version="6.18")
    finalize(k)
    mm = memory_map(files_of(m), m.physmem.read)
    first = prop_u64(k.debugfs.read("kho/out/fdt"), "/", "preserved-memory-map")
    assert spans(mm, "preserved") == block_ranges(preserved_blocks(m.physmem, first, 4096 * 8))
