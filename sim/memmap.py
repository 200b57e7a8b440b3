"""The physical memory map a machine's own files describe, as labelled ranges (for `khofs memmap`).

A tool that reads, not simulates: every range comes from a file a real 6.16 box has
(/proc/iomem, debugfs memblock/memory and memblock/reserved, kho/out/scratch_*, the KHO
FDTs, the kernel log) through `read_text(path)`, plus RAM through `read(phys, size)` to walk
the preserved-memory chunk list.  So the same code maps a khofs mount or a real machine's
files.  Drawing is khofs's business; this module only says what lies where.

What a running kernel cannot say, it does not guess: reserve_mem addresses are exported only
in the memblock sub-FDT, so they appear after finalize (out/) or after a KHO boot (in/).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sim.kho_decode import Read, kho_decode

# Layers in drawing order, with what each holds.
# The first lane is the firmware's RAM map, named by where it comes from on each architecture
# (the top level of /proc/iomem in every case); a map has only one of them.
LAYERS = (
    ("e820", "firmware map: System RAM, Reserved, holes"),
    ("dt-memory", "firmware map (device tree /memory nodes, as /proc/iomem shows them): System RAM, "
                  "reserved, holes"),
    ("iomem", "/proc/iomem top level (architecture unknown): System RAM, reserved, holes"),
    ("node", "NUMA nodes (memblock/memory nid)"),
    ("memory", "memblock.memory regions and flags"),
    ("reserved", "memblock.reserved regions and flags"),
    ("kernel", "the kernel image (iomem Kernel code)"),
    ("scratch", "KHO scratch areas"),
    ("fdt", "KHO sub-FDTs (the root FDT page is among the preserved ranges)"),
    ("preserved", "preserved ranges of the outgoing hand-over (after finalize)"),
    ("reserve_mem", "reserve_mem regions by name"),
    ("revived", "memory this kernel took over from a KHO hand-over"),
)

ReadText = Callable[[str], str | bytes | None]

DEBUGFS = "sys/kernel/debug"
# /proc/sys/kernel/arch (utsname machine) -> the firmware map's lane.
FIRMWARE_LAYERS = {"x86_64": "e820", "aarch64": "dt-memory"}
_IOMEM = re.compile(r"^( *)([0-9a-f]+)-([0-9a-f]+) : (.*)$", re.M)
_REGION = re.compile(r"^\s*\d+: 0x([0-9a-f]+)\.\.0x([0-9a-f]+)\s+(\S+) (\S+)$", re.M)
_REVIVED = re.compile(r"Revived memory reservation '([^']*)' from KHO")


@dataclass(frozen=True)
class MapRange:
    layer: str
    start: int
    end: int                        # exclusive
    label: str

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class MemoryMap:
    title: str
    end: int                        # top of the address space drawn (end of RAM)
    ranges: list[MapRange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    firmware: str = "iomem"         # the firmware map's layer (FIRMWARE_LAYERS)

    def layer(self, name: str) -> list[MapRange]:
        return [r for r in self.ranges if r.layer == name]


def _text(read_text: ReadText, path: str) -> str | None:
    data = read_text(path)
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def _blob(read_text: ReadText, path: str) -> bytes | None:
    data = read_text(path)
    return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data


def _firmware_map(iomem: str, layer: str) -> tuple[list[MapRange], list[MapRange], int]:
    """Top-level iomem lines as ranges of the firmware map's layer with the holes between, the
    kernel image, and RAM's end."""
    top, kernel = [], []
    for m in _IOMEM.finditer(iomem):
        start, end, name = int(m[2], 16), int(m[3], 16) + 1, m[4]
        if m[1]:
            if name == "Kernel code":
                kernel.append(MapRange("kernel", start, end, "kernel image"))
        else:
            top.append(MapRange(layer, start, end, name))
    top.sort(key=lambda r: r.start)
    out, cur = [], 0
    for r in top:
        if r.start > cur:
            out.append(MapRange(layer, cur, r.start, "hole"))
        out.append(r)
        cur = max(cur, r.end)
    ram_end = max((r.end for r in top if r.label == "System RAM"), default=0)
    return out, kernel, ram_end


def _regions(text: str, layer: str) -> list[MapRange]:
    return [MapRange(layer, int(m[1], 16), int(m[2], 16) + 1, f"{m[4]} nid {m[3]}")
            for m in _REGION.finditer(text)]


def _nodes(memory: list[MapRange]) -> list[MapRange]:
    """Node spans: consecutive memblock.memory regions of one nid (node ids ascend with address)."""
    out: list[MapRange] = []
    for r in memory:
        nid = r.label.rsplit(" ", 1)[1]
        if out and out[-1].label == f"node {nid}":
            out[-1] = MapRange("node", out[-1].start, r.end, out[-1].label)
        else:
            out.append(MapRange("node", r.start, r.end, f"node {nid}"))
    return out


def _scratch(read_text: ReadText) -> list[MapRange]:
    phys = _text(read_text, f"{DEBUGFS}/kho/out/scratch_phys")
    size = _text(read_text, f"{DEBUGFS}/kho/out/scratch_len")
    if not phys or not size:
        return []
    areas = list(zip((int(x, 16) for x in phys.split()), (int(x, 16) for x in size.split()), strict=False))
    names = ["lowmem", "global"] + [f"node {i}" for i in range(len(areas))]
    return [MapRange("scratch", a, a + s, f"scratch {names[i]}") for i, (a, s) in enumerate(areas) if s]


def _kernel_version(dmesg: str) -> str | None:
    m = re.search(r"Linux version (\d+\.\d+)", dmesg)
    return m[1] if m else None


def _handover(read_text: ReadText, read: Read | None, ram_end: int, which: str, kver: str | None,
              mm: MemoryMap) -> list[MapRange]:
    """kho/<which>/fdt's FDTs, reserve_mem regions and (out/ only: the in/ chunk list is free memory
    by now) preserved ranges."""
    blob = _blob(read_text, f"{DEBUGFS}/kho/{which}/fdt")
    if blob is None:
        return []
    d = kho_decode(blob, read, ram_end, kver)
    out = []
    suffix = "" if which == "out" else " (handed over)"
    for child in d.fdt.root.children if d.fdt.root is not None else []:
        for sub in child.sub_fdts.values():
            if sub.phys is not None and sub.totalsize:
                out.append(MapRange("fdt", sub.phys, sub.phys + sub.totalsize, f"FDT {child.name}{suffix}"))
    out += [MapRange("reserve_mem", start, start + size, name) for name, start, size in d.reserve_mem()]
    if which == "out" and d.mem_map is not None:
        out += [MapRange("preserved", s, e, "preserved") for s, e in d.mem_map.ranges]
        mm.notes += [f"out/fdt: {p}" for p in d.problems]
    return out


def memory_map(read_text: ReadText, read: Read | None, title: str = "this kernel") -> MemoryMap:
    """The running kernel's map, from its files (`read_text(path)`, None if absent) and RAM."""
    firmware = FIRMWARE_LAYERS.get((_text(read_text, "proc/sys/kernel/arch") or "").strip(), "iomem")
    top, kernel, ram_end = _firmware_map(_text(read_text, "proc/iomem") or "", firmware)
    mm = MemoryMap(title, ram_end, firmware=firmware)
    memory = _regions(_text(read_text, f"{DEBUGFS}/memblock/memory") or "", "memory")
    reserved = _regions(_text(read_text, f"{DEBUGFS}/memblock/reserved") or "", "reserved")
    dmesg = _text(read_text, "khofs/dmesg") or ""
    kver = _kernel_version(dmesg)
    mm.ranges += top + _nodes(memory) + memory + reserved + kernel + _scratch(read_text)
    outgoing = _handover(read_text, read, ram_end, "out", kver, mm)
    incoming = _handover(read_text, read, ram_end, "in", kver, mm)
    mm.ranges += outgoing + [r for r in incoming if r.layer == "fdt"]
    names = set(_REVIVED.findall(dmesg))
    revived = [r for r in incoming if r.layer == "reserve_mem" and r.label in names]
    if not any(r.layer == "reserve_mem" for r in outgoing):
        mm.ranges += revived            # not finalized yet: the revived ones are all it can name
    mm.ranges += [MapRange("revived", r.start, r.end, f"reserve_mem {r.label}") for r in revived]
    if incoming:
        mm.ranges += [MapRange("revived", r.start, r.end, "preserved (RSV_NIT)")
                      for r in reserved if r.label.startswith("RSV_NIT")]
    return mm


def handed_over_map(read_text: ReadText, read: Read | None) -> MemoryMap | None:
    """The previous kernel's map as far as its hand-over (read by this kernel) tells; None without one.

    Same hardware (firmware map, nodes); its scratch (handed over: the same areas); what it preserved,
    as this kernel deserialized it (the RSV_NIT reservations: the chunk list itself is free
    memory by now); its FDTs and reserve_mem regions from in/.
    """
    if _blob(read_text, f"{DEBUGFS}/kho/in/fdt") is None:
        return None
    now = memory_map(read_text, read)
    mm = MemoryMap("previous kernel (from the hand-over)", now.end, firmware=now.firmware)
    mm.ranges += [r for r in now.ranges if r.layer in (now.firmware, "node", "scratch")]
    mm.ranges += [MapRange("preserved", r.start, r.end, "preserved") for r in now.ranges
                  if r.layer == "revived" and r.label.startswith("preserved")]
    kver = _kernel_version(_text(read_text, "khofs/dmesg") or "")
    mm.ranges += [MapRange(r.layer, r.start, r.end, r.label.removesuffix(" (handed over)"))
                  for r in _handover(read_text, read, now.end, "in", kver, mm)]
    return mm
