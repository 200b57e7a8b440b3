"""`khofs memmap`: draw the physical memory map sim.memmap reads from a machine's files.

Text (one line per range), JSON, or an SVG whose address axis is log-scaled per segment:
every stretch between two range boundaries gets a width that grows with the log of its size,
so a 1 MiB region on a 1 TiB machine stays visible next to a 100 GiB node.
"""

import json
import os
from bisect import bisect_right
from collections.abc import Callable
from typing import IO, Any
from xml.sax.saxutils import escape

from khofs.decode import human_size, open_ram
from khofs.kexec import DEFAULT_ROOT
from sim.memmap import FIRMWARE_LAYERS, LAYERS, MapRange, MemoryMap, handed_over_map, memory_map

# -- reading a mount --


def mount_reader(root: str) -> Callable[[str], bytes | None]:
    def read_text(path: str) -> bytes | None:
        try:
            with open(os.path.join(root, path), "rb") as f:
                return f.read()
        except OSError:
            return None
    return read_text


# -- text and JSON --

def to_text(out: IO[str], mm: MemoryMap) -> None:
    out.write(f"# {mm.title}: RAM up to {mm.end:#x} ({human_size(mm.end)} of address space)\n")
    for name, what in LAYERS:
        ranges = mm.layer(name)
        if not ranges:
            continue
        out.write(f"{name}: {what}\n")
        for r in ranges:
            out.write(f"  {r.start:#018x}-{r.end - 1:#018x}  {human_size(r.size):>10}  {r.label}\n")
    for note in mm.notes:
        out.write(f"# note: {note}\n")


def to_json(mm: MemoryMap) -> dict[str, Any]:
    return {"title": mm.title, "end": mm.end, "notes": mm.notes,
            "ranges": [{"layer": r.layer, "start": r.start, "end": r.end, "size": r.size, "label": r.label}
                       for r in mm.ranges]}


# -- SVG --

_W, _LEFT, _RIGHT, _ROW, _GAP = 1400, 200, 70, 24, 4
_FONT = 11
_CHAR_W = 6.3                   # average width of an 11 px sans-serif character
_MIN_W = 2.0                    # the narrowest a bar is drawn
_MAX_BARS = 200                 # per lane (see _drawable)
_PALETTE = {
    "System RAM": "#cfe8cf", "Reserved": "#9e9e9e", "hole": "#ffffff",
    "memory": "#a9c8ee", "memory KHO_SCRATCH": "#f5b971",
    "reserved": "#f2a7a0", "reserved RSV_KERN": "#b3403a", "reserved RSV_NIT": "#8e63b5",
    "kernel": "#333333", "scratch": "#f08c2e", "fdt": "#2a9d8f", "preserved": "#7b4fa6",
    "reserve_mem": "#e9c46a", "revived": "#3a9d4a",
}
_FIRMWARE = {"iomem", *FIRMWARE_LAYERS.values()}
_NODE_COLOURS = ("#dce9f7", "#f7e3dc", "#e3f7dc", "#f3dcf7", "#f7f2dc", "#dcf7f3", "#ecdcf7", "#f7dce9")


def _colour(layer: str, label: str) -> str:
    if layer in _FIRMWARE:
        return _PALETTE.get(label, "#9e9e9e")
    if layer == "node":
        return _NODE_COLOURS[int(label.split()[1]) % len(_NODE_COLOURS)]
    flags = label.split(" nid ")[0]
    return _PALETTE.get(f"{layer} {flags}", _PALETTE.get(layer, "#bbbbbb"))


class LogAxis:
    """Address -> x: each segment between boundaries is as wide as 1 + log2(its pages)."""

    def __init__(self, bounds: list[int], x0: float, width: float) -> None:
        self.bounds = sorted(set(bounds))
        pairs = zip(self.bounds[:-1], self.bounds[1:], strict=True)
        weights = [1 + max(0.0, (e - s).bit_length() - 13) for s, e in pairs]
        scale = width / (sum(weights) or 1)
        self.xs = [x0]
        for w in weights:
            self.xs.append(self.xs[-1] + w * scale)

    def x(self, addr: int) -> float:
        i = min(max(bisect_right(self.bounds, addr) - 1, 0), len(self.bounds) - 2)
        s, e = self.bounds[i], self.bounds[i + 1]
        frac = min(max((addr - s) / (e - s), 0.0), 1.0)
        return self.xs[i] + frac * (self.xs[i + 1] - self.xs[i])


def _drawable(ranges: list[MapRange]) -> list[tuple[MapRange, int]]:
    """At most _MAX_BARS bars per lane: the ranges split at their largest gaps, with their counts.

    A million scattered preserved pages stay a million lines in the text and JSON; drawn
    one by one they would squeeze the rest of the axis to nothing."""
    ranges = sorted(ranges, key=lambda r: r.start)
    if len(ranges) <= _MAX_BARS:
        return [(r, 1) for r in ranges]
    gaps = sorted(range(1, len(ranges)), key=lambda i: ranges[i].start - ranges[i - 1].end)
    cuts = sorted(gaps[-(_MAX_BARS - 1):])
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(ranges)], strict=True):
        group = ranges[a:b]
        label = group[0].label if b - a == 1 else f"{b - a} ranges"
        out.append((MapRange(group[0].layer, group[0].start, max(r.end for r in group), label), b - a))
    return out


def _panel(parts: list[str], mm: MemoryMap, axis: LogAxis, y: float) -> float:
    parts.append(f'<text x="10" y="{y + 14}" class="panel">{escape(mm.title)}</text>')
    y += 22
    for name, what in LAYERS:
        ranges = mm.layer(name)
        if not ranges:
            continue
        parts.append(f'<text x="10" y="{y + _ROW * 0.68:.1f}" class="layer"><title>{escape(what)}</title>'
                     f'{escape(name)}</text>')
        parts.append(f'<rect x="{_LEFT}" y="{y}" width="{_W - _LEFT - _RIGHT}" height="{_ROW}" '
                     'class="lane"/>')
        for r, count in _drawable(ranges):
            x0, x1 = axis.x(r.start), axis.x(r.end)
            w = max(x1 - x0, _MIN_W)
            tip = f"{r.label}: {r.start:#x}-{r.end - 1:#x} ({human_size(r.size)})"
            if count > 1:
                tip += f": {count} ranges drawn as one"
            parts.append(f'<rect class="{name}" data-label="{escape(r.label)}" data-start="{r.start}" '
                         f'data-end="{r.end}" x="{x0:.2f}" y="{y + 2}" width="{w:.2f}" height="{_ROW - 4}" '
                         f'fill="{_colour(name, r.label)}"><title>{escape(tip)}</title></rect>')
            # The lane names the layer: bars say only what differs ("lowmem", "RSV_KERN").
            text = r.label.split(" nid ")[0].removeprefix(f"{name} ")
            if len(text) * _CHAR_W + 6 <= w:
                dark = _colour(name, r.label) in ("#333333", "#b3403a", "#7b4fa6", "#8e63b5", "#3a9d4a",
                                                  "#2a9d8f")
                parts.append(f'<text x="{x0 + w / 2:.2f}" y="{y + _ROW * 0.68:.1f}" class="label'
                             f'{" dark" if dark else ""}">{escape(text)}</text>')
        y += _ROW + _GAP
    return y


def _ticks(parts: list[str], axis: LogAxis, y: float) -> float:
    last = -1e9
    for addr, x in zip(axis.bounds, axis.xs, strict=True):
        parts.append(f'<line x1="{x:.2f}" y1="{y}" x2="{x:.2f}" y2="{y + 5}" class="tick"/>')
        if x - last >= 14:
            parts.append(f'<text transform="translate({x:.2f},{y + 8}) rotate(60)" class="addr">'
                         f'{addr:#x}</text>')
            last = x
    return y + 95


def _legend(parts: list[str], y: float, firmware: str) -> float:
    items = [("#cfe8cf", "System RAM"), ("#9e9e9e", f"Reserved ({firmware})"), ("#dce9f7", "NUMA node"),
             ("#a9c8ee", "memblock.memory"), ("#f5b971", "memory KHO_SCRATCH"), ("#f2a7a0", "reserved"),
             ("#b3403a", "reserved RSV_KERN"), ("#8e63b5", "reserved RSV_NIT"), ("#333333", "kernel image"),
             ("#f08c2e", "KHO scratch"), ("#2a9d8f", "KHO FDT"), ("#7b4fa6", "preserved"),
             ("#e9c46a", "reserve_mem"), ("#3a9d4a", "revived")]
    parts.append(f'<text x="10" y="{y + 12}" class="panel">legend</text>')
    per_row = 5
    for i, (colour, name) in enumerate(items):
        x = _LEFT + (i % per_row) * 230
        yy = y + (i // per_row) * 20
        parts.append(f'<rect x="{x}" y="{yy}" width="14" height="14" fill="{colour}" class="key"/>'
                     f'<text x="{x + 20}" y="{yy + 11}" class="legend">{escape(name)}</text>')
    return y + (len(items) + per_row - 1) // per_row * 20 + 10


def to_svg(maps: list[MemoryMap]) -> str:
    end = max(mm.end for mm in maps)
    bars = [r for mm in maps for name, _ in LAYERS for r, _ in _drawable(mm.layer(name))]
    bounds = [0, end] + [p for r in bars for p in (r.start, r.end) if 0 <= p <= end]
    axis = LogAxis(bounds, _LEFT, _W - _LEFT - _RIGHT)
    parts: list[str] = []
    y = 40.0
    for mm in maps:
        y = _panel(parts, mm, axis, y) + 8
    y = _ticks(parts, axis, y)
    y = _legend(parts, y, maps[-1].firmware)
    height = int(y + 10)
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
            f'viewBox="0 0 {_W} {height}" font-family="DejaVu Sans, Arial, sans-serif">\n'
            '<style>.panel{font-size:13px;font-weight:bold}.layer{font-size:12px}'
            f'.label{{font-size:{_FONT}px;text-anchor:middle;fill:#111}}.label.dark{{fill:#fff}}'
            '.addr{font-size:9px;fill:#444}.legend{font-size:11px}.lane{fill:#f7f7f7;stroke:#ddd}'
            '.tick{stroke:#888}rect{stroke:#555;stroke-width:0.3}</style>\n'
            f'<rect width="{_W}" height="{height}" fill="#ffffff"/>\n'
            f'<text x="10" y="22" font-size="15" font-weight="bold">khofs memmap: '
            f'{escape(human_size(end))} of physical address space, log-scaled segments</text>\n')
    return head + "\n".join(parts) + "\n</svg>\n"


def memmap(svg: str | None, as_json: bool, before_after: bool, out: IO[str]) -> int:
    root = os.environ.get("KHOFS_ROOT", DEFAULT_ROOT)
    if not os.path.exists(os.path.join(root, "proc/iomem")):
        raise OSError(f"no machine at {root} (run inside `khofs run`, or set KHOFS_ROOT to a mount)")
    read_text = mount_reader(root)
    try:
        ram = open_ram(None, root)
    except OSError as e:                # a real box with STRICT_DEVMEM, or no dev/mem at all
        ram, why = None, e.strerror
    read = ram.read if ram else None
    maps = [memory_map(read_text, read)]
    if ram is None:
        maps[0].notes.append(f"{root}/dev/mem: {why}: preserved ranges not walked")
    if not maps[0].end:
        raise OSError(f"no System RAM in {root}/proc/iomem (reading it needs root on a real box)")
    if before_after:
        before = handed_over_map(read_text, read)
        if before is None:
            raise OSError("memmap --before-after: this kernel did not boot from a KHO hand-over (no kho/in)")
        maps = [before, maps[0]]
    if svg:
        with open(svg, "w") as f:
            f.write(to_svg(maps))
    if as_json:
        doc = to_json(maps[0]) if len(maps) == 1 else {"before": to_json(maps[0]), "after": to_json(maps[1])}
        json.dump(doc, out, indent=1)
        out.write("\n")
    else:
        for i, mm in enumerate(maps):
            if i:
                out.write("\n")
            to_text(out, mm)
    return 0
