"""`khofs decode`: print a KHO hand-over the way the kernel reads it (sim.kho_decode does the reading).

Where RAM comes from: `--mem FILE` (a raw dump, file offset = physical address), else the
mount that holds PATH, else `$KHOFS_ROOT` (the mount `khofs run` sets).  Without RAM only the
blob is decoded and the output says what was not followed.
"""

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from khofs.fs import DEBUGFS_ROOT, DEV_MEM, DMESG_PATH, SANITIZER_PATH
from khofs.kexec import DEFAULT_ROOT
from sim.kho_decode import DecodedFdt, KhoDecode, Node, Prop, kho_decode
from sim.sizes import PAGE_SHIFT


def human_size(n: int) -> str:
    """Exact binary units where they fit (`64 MiB`), three significant digits otherwise."""
    for shift, unit in ((60, "EiB"), (50, "PiB"), (40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{n >> shift} {unit}" if n % (1 << shift) == 0 else f"{value:.3g} {unit}"
    return f"{n} B"


@dataclass
class Ram:
    """Physical memory to follow pointers through, and what to call it in the output."""

    read: Callable[[int, int], bytes]
    end: int | None
    label: str


def _file_reader(path: str) -> tuple[Callable[[int, int], bytes], int]:
    fd = os.open(path, os.O_RDONLY)

    def read(phys: int, size: int) -> bytes:
        data = os.pread(fd, size, phys)
        if len(data) != size:
            raise ValueError(f"0x{phys:x}+0x{size:x} is past the end of {path}")
        return data
    return read, os.fstat(fd).st_size


def mount_root_of(path: str | None) -> str | None:
    """The khofs mount holding `path` (a directory with dev/mem and khofs/dmesg), else $KHOFS_ROOT."""
    if path:
        d = os.path.dirname(os.path.abspath(path))
        while d != os.path.dirname(d):
            if os.path.exists(d + DEV_MEM) and os.path.exists(d + DMESG_PATH):
                return d
            d = os.path.dirname(d)
    root = os.environ.get("KHOFS_ROOT")
    return root if root and os.path.exists(root + DEV_MEM) else None


def ram_end_of(root: str) -> int | None:
    """The end of the highest System RAM range in the mount's proc/iomem."""
    try:
        with open(root + "/proc/iomem") as f:
            ends = [int(m[1], 16) + 1 for m in re.finditer(r"^[0-9a-f]+-([0-9a-f]+) : System RAM$",
                                                          f.read(), re.M)]
    except OSError:
        return None
    return max(ends) if ends else None


def kernel_version_of(root: str) -> str | None:
    """The running kernel's version, from the first line of its log."""
    try:
        with open(root + DMESG_PATH) as f:
            m = re.search(r"Linux version (\d+)\.(\d+)", f.read(4096))
    except OSError:
        return None
    return f"{m[1]}.{m[2]}" if m else None


def open_ram(mem: str | None, root: str | None) -> Ram | None:
    if mem:
        read, size = _file_reader(mem)
        return Ram(read, size, mem)
    if root:
        read, _ = _file_reader(root + DEV_MEM)
        return Ram(read, ram_end_of(root), root + DEV_MEM)
    return None


def sanitizer_findings(root: str | None) -> int | None:
    if root is None:
        return None
    try:
        with open(root + SANITIZER_PATH) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def default_fdt(root: str) -> str:
    """out/fdt once finalized, else in/fdt (the hand-over this kernel received)."""
    out = f"{root}{DEBUGFS_ROOT}/kho/out/fdt"
    return out if os.path.exists(out) else f"{root}{DEBUGFS_ROOT}/kho/in/fdt"


# -- JSON --

def _prop_json(p: Prop) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "kind": p.kind, "value": p.value, "raw": p.raw.hex()}
    if p.folios is not None:
        out["folios"] = [{"phys": phys, "order": order} for phys, order in p.folios]
    return out


def _node_json(node: Node) -> dict[str, Any]:
    props = []
    for p in node.props:
        pj = _prop_json(p)
        if p.name in node.sub_fdts:
            pj["sub_fdt"] = _fdt_json(node.sub_fdts[p.name])
        props.append(pj)
    return {"name": node.name, "path": node.path, "compatible": node.compatible, "properties": props,
            "children": [_node_json(c) for c in node.children]}


def _fdt_json(fdt: DecodedFdt) -> dict[str, Any]:
    return {"phys": fdt.phys, "totalsize": fdt.totalsize,
            "root": None if fdt.root is None else _node_json(fdt.root)}


def _sub_fdts(node: Node | None) -> list[tuple[str, Node, DecodedFdt]]:
    out: list[tuple[str, Node, DecodedFdt]] = []
    if node is None:
        return out
    for name, sub in node.sub_fdts.items():
        out.append((name, node, sub))
        out.extend(_sub_fdts(sub.root))
    for child in node.children:
        out.extend(_sub_fdts(child))
    return out


def to_json(d: KhoDecode, source: str, ram: Ram | None, findings: int | None) -> dict[str, Any]:
    mm = d.mem_map
    return {
        "source": source,
        "ram": ram.label if ram else None,
        "kernel_version": d.kernel_version,
        "preserve_bits": d.preserve_bits,
        "fdt": _fdt_json(d.fdt),
        "sub_fdts": [{"name": node.name, "path": node.path, "phys": sub.phys, "totalsize": sub.totalsize,
                      "compatible": sub.root.compatible if sub.root else None}
                     for _, node, sub in _sub_fdts(d.fdt.root)],
        "reserve_mem": [{"name": n, "start": s, "size": z} for n, s, z in d.reserve_mem()],
        "preserved_memory_map": None if mm is None else {
            "first": mm.first,
            "complete": mm.complete,
            "chunks": [{"phys": c.phys, "next": c.next, "order": c.order,
                        "bitmaps": [{"phys_start": b.phys_start, "bitmap": b.bitmap,
                                     "blocks": b.bits.bit_count(),
                                     "ranges": [[s, e] for s, e in b.ranges()]} for b in c.bitmaps]}
                       for c in mm.chunks],
            "ranges": [{"start": s, "end": e, "size": e - s} for s, e in mm.ranges],
            "total_bytes": mm.total,
        },
        "problems": d.problems,
        "notes": d.notes,
        "sanitizer_findings": findings,
    }


# -- text --

def _value_text(p: Prop) -> tuple[str, str]:
    """The dts value and a comment."""
    if p.kind == "string":
        return f'"{p.value}"', ""
    if p.kind == "strings":
        assert isinstance(p.value, list)
        return '"' + "\\0".join(p.value) + '"', ""
    if p.kind in ("u64", "fdt", "mem-map"):
        assert isinstance(p.value, int)
        note = {"fdt": "sub-FDT, below", "mem-map": "chunk list, walked at the end"}.get(p.kind, "")
        if p.name == "size":
            note = human_size(p.value)
        return f"/bits/ 64 <0x{p.value:x}>", "u64 LE" + (f": {note}" if note else "")
    if p.kind == "u32":
        assert isinstance(p.value, int)
        return f"<0x{p.value:x}>", "u32 LE"
    if p.kind in ("folios", "vmalloc"):
        folios = p.folios or []
        shown = ", ".join(f"0x{phys:x} order {order}" for phys, order in folios[:4])
        more = f", ... ({len(folios)} folios)" if len(folios) > 4 else ""
        head = ""
        if p.kind == "vmalloc":
            assert isinstance(p.value, dict)
            head = (f"struct kho_vmalloc: first 0x{p.value['first']:x}, {p.value['total_pages']} pages; ")
        return f"[{p.raw.hex(' ')}]" if len(p.raw) <= 16 else f"/* {len(p.raw)} bytes */", \
            f"{head}phys|order: {shown}{more}" if folios or head else ""
    if p.kind == "cells":
        assert isinstance(p.value, list)
        return "<" + " ".join(f"0x{v:02x}" for v in p.value) + ">", ""
    if not p.raw:
        return "", ""
    return "[" + p.raw.hex(" ") + "]", ""


def _node_text(out: IO[str], node: Node, depth: int) -> None:
    tab = "\t" * depth
    out.write(f"{tab}{node.name or '/'} {{\n")
    for p in node.props:
        value, comment = _value_text(p)
        line = f"{tab}\t{p.name}" + (f" = {value};" if value else ";")
        out.write(line + (f"\t// {comment}" if comment else "") + "\n")
        sub = node.sub_fdts.get(p.name)
        if sub is not None:
            _sub_text(out, sub, depth + 1)
    for child in node.children:
        _node_text(out, child, depth + 1)
    out.write(f"{tab}}};\n")


def _sub_text(out: IO[str], sub: DecodedFdt, depth: int) -> None:
    tab = "\t" * depth
    if sub.root is None:
        out.write(f"{tab}// sub-FDT at 0x{sub.phys:x}: not decoded (see the notes and problems)\n")
        return
    out.write(f"{tab}// sub-FDT at 0x{sub.phys:x}, {sub.totalsize} bytes, "
              f"compatible \"{sub.root.compatible}\":\n")
    _node_text(out, sub.root, depth)


def to_text(out: IO[str], d: KhoDecode, source: str, ram: Ram | None) -> None:
    out.write(f"// khofs decode {source}: {d.kernel_version} layout; RAM: "
              f"{ram.label if ram else 'none (pointers not followed)'}\n/dts-v1/;\n\n")
    if d.fdt.root is not None:
        _node_text(out, d.fdt.root, 0)
    mm = d.mem_map
    if mm is not None:
        out.write(f"\n// preserved-memory-map at 0x{mm.first:x}: {len(mm.chunks)} chunks, "
                  f"{d.preserve_bits}-bit bitmaps\n")
        for c in mm.chunks:
            block = human_size(1 << (c.order + PAGE_SHIFT))
            out.write(f"chunk 0x{c.phys:x}: order {c.order} ({block} blocks), "
                      f"{len(c.bitmaps)} bitmaps, next 0x{c.next:x}\n")
            for b in c.bitmaps:
                ranges = list(b.ranges())
                shown = ", ".join(f"0x{s:x}-0x{e:x}" for s, e in ranges[:4])
                more = f", ... ({len(ranges)} runs)" if len(ranges) > 4 else ""
                out.write(f"\tbitmap 0x{b.bitmap:x} from 0x{b.phys_start:x}: {b.bits.bit_count()} blocks: "
                          f"{shown}{more}\n")
        out.write(f"\n// preserved ranges, merged{'' if mm.complete else ' (list incomplete)'}\n")
        for s, e in mm.ranges:
            out.write(f"0x{s:016x}-0x{e - 1:016x}  {human_size(e - s)}\n")
        out.write(f"total: {len(mm.ranges)} ranges, {human_size(mm.total)} ({mm.total} bytes)\n")
    for note in d.notes:
        out.write(f"// note: {note}\n")
    for problem in d.problems:
        out.write(f"// PROBLEM: {problem}\n")


def decode(path: str | None, mem: str | None, kernel_version: str | None, as_json: bool,
           out: IO[str]) -> int:
    """Run `khofs decode`; 0 when the hand-over decoded without problems, 2 when it has some."""
    root = mount_root_of(path)
    if path is None:
        path = default_fdt(root or os.environ.get("KHOFS_ROOT", DEFAULT_ROOT))
    with open(path, "rb") as f:
        blob = f.read()
    ram = open_ram(mem, root)
    version = kernel_version or (kernel_version_of(root) if root and not mem else None)
    d = kho_decode(blob, ram.read if ram else None, ram.end if ram else None, version)
    if as_json:
        json.dump(to_json(d, path, ram, sanitizer_findings(root)), out, indent=1)
        out.write("\n")
    else:
        to_text(out, d, path, ram)
    return 2 if d.problems else 0
