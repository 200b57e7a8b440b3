"""Decode a KHO hand-over as the kernel reads it, from a root FDT and a `read(phys, size)` callable.

A tool that reads, not simulates: nothing here touches a Kernel.  RAM is any callable
(PhysMem.read, a raw dump where file offset = physical address, a mount's dev/mem), so a
blob copied from a real Linux 6.16-6.18 machine decodes the same way as the simulator's.
FDTs are read with sim.lib.fdt (libfdt semantics), the chunk list with kho_mem_chunks_checked,
the walk and checks the new kernel uses too.  Known compatibles ("kho-v1", "memblock-v1",
"reserve-mem-v1", "kho-test-v1") get typed properties; anything else is shown the way dtc
guesses.  Every fault becomes a `problems` entry naming the node or chunk, never an exception.
"""

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sim.kernel.kexec_handover import (
    FDT_MAP_MAX,
    KHO_FDT_COMPATIBLE,
    KHO_VMALLOC_SIZE,
    PROP_PRESERVED_MEMORY_MAP,
    PROP_SUB_FDT,
    KhoMemChunk,
    KhoMemMapError,
    kho_mem_chunks_checked,
    kho_preserve_bits,
)
from sim.lib import fdt as libfdt
from sim.lib.test_kho import KHO_TEST_COMPAT
from sim.mm.reserve_mem import MEMBLOCK_KHO_NODE_COMPATIBLE, RESERVE_MEM_KHO_NODE_COMPATIBLE
from sim.sizes import MAX_PAGE_ORDER, PAGE_SHIFT, PAGE_SIZE

Read = Callable[[int, int], bytes]

# Typed properties of the known compatibles: path relative to the compatible node -> kind.
# "u64"/"u32" are native-endian (LE) integers; "fdt" a u64 pointer to a sub-FDT; "mem-map" a
# u64 pointer to the chunk list; "folios" kho_test's folios_info (u64 phys|order array, 6.18
# a struct kho_vmalloc pointing at one).
SCHEMAS: dict[str, dict[str, str]] = {
    KHO_FDT_COMPATIBLE: {PROP_PRESERVED_MEMORY_MAP: "mem-map", f"*/{PROP_SUB_FDT}": "fdt"},
    MEMBLOCK_KHO_NODE_COMPATIBLE: {},
    RESERVE_MEM_KHO_NODE_COMPATIBLE: {"start": "u64", "size": "u64"},
    KHO_TEST_COMPAT: {"magic": "u32", "data/nr_folios": "u32", "data/csum": "u32",
                      "data/folios_info": "folios"},
}
_FDT_ERRORS = {1: "NOTFOUND", 2: "EXISTS", 3: "NOSPACE", 4: "BADOFFSET", 5: "BADPATH",
               6: "BADPHANDLE", 7: "BADSTATE", 8: "TRUNCATED", 9: "BADMAGIC", 10: "BADVERSION",
               11: "BADSTRUCTURE", 12: "BADLAYOUT", 13: "INTERNAL", 14: "BADNCELLS", 15: "BADVALUE"}
_MAX_DEPTH = 32                     # sub-FDTs pointing at sub-FDTs: stop a loop of pointers


def fdt_strerror(err: int) -> str:
    """libfdt's name of a negative return code, e.g. -FDT_ERR_BADMAGIC."""
    return f"-FDT_ERR_{_FDT_ERRORS.get(-err, str(-err))} ({err})"


@dataclass
class Prop:
    name: str
    raw: bytes
    kind: str                       # u64 u32 fdt mem-map folios string strings cells bytes
    value: object                   # int, str, list[str] or list[int] (cells, bytes)
    folios: list[tuple[int, int]] | None = None     # (phys, order) of kho_test's folios_info


@dataclass
class Node:
    name: str
    path: str
    compatible: str | None
    props: list[Prop] = field(default_factory=list)
    children: list["Node"] = field(default_factory=list)
    sub_fdts: dict[str, "DecodedFdt"] = field(default_factory=dict)   # by property name


@dataclass
class DecodedFdt:
    phys: int | None                # where it lies in RAM (None: the root blob given as a file)
    totalsize: int
    root: Node | None               # None when the header is unusable


@dataclass(frozen=True)
class MemBitmap:
    """One bitmap of the chunk list: its order, first address, location and contents."""

    order: int
    phys_start: int
    bitmap: int
    bits: int                       # bit b set: block b is preserved

    def ranges(self) -> Iterator[tuple[int, int]]:
        """Runs of set bits as [start, end) ranges: cheap however many bits are set."""
        bits, shift, base = self.bits, self.order + PAGE_SHIFT, 0
        while bits:
            skip = (bits & -bits).bit_length() - 1
            bits >>= skip
            run = (~bits & (bits + 1)).bit_length() - 1
            bits >>= run
            yield self.phys_start + ((base + skip) << shift), self.phys_start + ((base + skip + run) << shift)
            base += skip + run


@dataclass(frozen=True)
class MemChunk:
    phys: int
    next: int
    order: int
    bitmaps: tuple[MemBitmap, ...]


@dataclass
class MemMap:
    """The preserved-memory-map chunk list and the ranges it describes."""

    first: int
    chunks: list[MemChunk]
    ranges: list[tuple[int, int]]   # merged [start, end)
    complete: bool                  # False: the walk stopped at a problem

    @property
    def total(self) -> int:
        return sum(e - s for s, e in self.ranges)


@dataclass
class KhoDecode:
    fdt: DecodedFdt
    preserve_bits: int
    kernel_version: str
    mem_map: MemMap | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def reserve_mem(self) -> list[tuple[str, int, int]]:
        """(name, start, size) of every reserve-mem-v1 node in any sub-FDT."""
        out = []
        for node in _walk(self.fdt.root):
            if node.compatible == RESERVE_MEM_KHO_NODE_COMPATIBLE:
                start, size = (next((p.value for p in node.props if p.name == n and p.kind == "u64"), None)
                               for n in ("start", "size"))
                if isinstance(start, int) and isinstance(size, int):
                    out.append((node.name, start, size))
        return out


def _walk(node: Node | None) -> Iterator[Node]:
    if node is None:
        return
    yield node
    for child in node.children:
        yield from _walk(child)
    for sub in node.sub_fdts.values():
        yield from _walk(sub.root)


def merge_ranges(ranges: Iterator[tuple[int, int]] | list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted disjoint [start, end) ranges covering the given ones (adjacent ones joined)."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def guess_kernel_version(chunks: list[KhoMemChunk], read: Read) -> tuple[str, str]:
    """The bitmap layout a chunk list was written with, and why.

    6.18 bitmaps are whole pages covering PAGE_SIZE * 8 blocks: a bitmap that is not page
    aligned, or a phys_start that is not a multiple of a 6.18 bitmap's span, is 6.16/6.17's
    (512 bytes).  A page-aligned bitmap with bits set past its first 512 bytes is 6.18's.
    Otherwise both layouts read the same blocks, and 6.16 is as good as 6.18.
    """
    beyond = False
    for chunk in chunks:
        for phys_start, bitmap in chunk.bitmaps:
            span = kho_preserve_bits((6, 18)) << (chunk.order + PAGE_SHIFT)
            if bitmap % PAGE_SIZE or phys_start % span:
                return "6.16", "6.16/6.17 layout (512-byte bitmaps) recognised"
            if not beyond:
                try:
                    beyond = any(read(bitmap + 512, PAGE_SIZE - 512))
                except (OSError, ValueError):
                    pass
    if beyond:
        return "6.18", "6.18 layout (page-sized bitmaps) recognised"
    return "6.16", "6.16 and 6.18 bitmap layouts read the same blocks here"


class _Decoder:
    def __init__(self, read: Read | None, ram_end: int | None, kernel_version: str | None) -> None:
        self.read = read
        self.ram_end = ram_end
        self.kernel_version = kernel_version
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.visited: set[int] = set()

    # -- FDTs --

    def fdt(self, blob: bytes, phys: int | None, where: str, depth: int = 0) -> DecodedFdt:
        err = libfdt.fdt_check_header(blob)
        total = libfdt.fdt_totalsize(blob) if len(blob) >= 8 else 0
        if err:
            self.problems.append(f"{where}: not a valid FDT: {fdt_strerror(err)}")
            return DecodedFdt(phys, total, None)
        root = self.node(blob, 0, "", "/", None, where, depth)
        return DecodedFdt(phys, total, root)

    def node(self, blob: bytes, offset: int, name: str, path: str, schema: tuple[str, str] | None,
             where: str, depth: int) -> Node:
        comp, _ = libfdt.fdt_getprop(blob, offset, "compatible")
        compatible = comp.split(b"\0", 1)[0].decode("utf-8", "replace") if comp else None
        if compatible in SCHEMAS:
            schema = (compatible, path)
        node = Node(name, path, compatible)
        offset_p = libfdt.fdt_first_property_offset(blob, offset)
        while offset_p >= 0:
            pname, value, length = libfdt.fdt_getprop_by_offset(blob, offset_p)
            if pname is None or value is None:
                self.problems.append(f"{where} {path}: bad property: {fdt_strerror(length)}")
                break
            node.props.append(self.prop(pname, value, path, schema, where, node, depth))
            offset_p = libfdt.fdt_next_property_offset(blob, offset_p)
        if offset_p < 0 and offset_p != -libfdt.FDT_ERR_NOTFOUND:
            self.problems.append(f"{where} {path}: properties end early: {fdt_strerror(offset_p)}")
        child = libfdt.fdt_first_subnode(blob, offset)
        while child >= 0:
            cname = libfdt.fdt_get_name(blob, child)
            if cname is None:
                self.problems.append(f"{where} {path}: unreadable child node name")
                break
            cpath = f"{path.rstrip('/')}/{cname}"
            node.children.append(self.node(blob, child, cname, cpath, schema, where, depth))
            child = libfdt.fdt_next_subnode(blob, child)
        return node

    def prop(self, name: str, raw: bytes, path: str, schema: tuple[str, str] | None, where: str,
             node: Node, depth: int) -> Prop:
        kind = None
        if schema is not None:
            compatible, base = schema
            rel = path[len(base):].strip("/")
            key = f"{rel}/{name}" if rel else name
            table = SCHEMAS[compatible]
            kind = table.get(key) or (table.get(f"*/{name}") if rel and "/" not in rel else None)
        if kind is None:
            return _dtc_guess(name, raw)
        want = {"u32": 4, "folios": None}.get(kind, 8)
        if want is not None and len(raw) != want:
            self.problems.append(f"{where} {path}: property {name} is {len(raw)} bytes, "
                                 f"{want} expected ({kind})")
            return _dtc_guess(name, raw)
        if kind == "folios":
            nr = next((p.value for p in node.props if p.name == "nr_folios" and p.kind == "u32"), None)
            return self.folios(raw, path, where, nr if isinstance(nr, int) else None)
        value = int.from_bytes(raw, "little")
        prop = Prop(name, raw, kind, value)
        if kind == "fdt":
            node.sub_fdts[name] = self.sub_fdt(value, f"{path.rstrip('/')}/{name}", where, depth)
        return prop

    def sub_fdt(self, phys: int, label: str, where: str, depth: int) -> "DecodedFdt":
        here = f"sub-FDT {label} at 0x{phys:x}"
        if self.read is None:
            self.notes.append(f"{here}: not followed (no RAM: give --mem FILE or a mount)")
            return DecodedFdt(phys, 0, None)
        if phys in self.visited or depth >= _MAX_DEPTH:
            self.problems.append(f"{where} {label}: points back to an FDT already decoded (0x{phys:x})")
            return DecodedFdt(phys, 0, None)
        self.visited.add(phys)
        try:
            header = self.read(phys, 40)
            total = libfdt.fdt_totalsize(header)
            if total > FDT_MAP_MAX:
                self.problems.append(f"{here}: totalsize {total} is larger than any KHO FDT "
                                     f"(khofs reads at most {FDT_MAP_MAX})")
                return DecodedFdt(phys, total, None)
            blob = self.read(phys, max(total, 40))
        except (OSError, ValueError) as e:
            self.problems.append(f"{here}: cannot be read: {getattr(e, 'strerror', None) or e}")
            return DecodedFdt(phys, 0, None)
        return self.fdt(blob, phys, here, depth + 1)

    def folios(self, raw: bytes, path: str, where: str, nr: int | None) -> Prop:
        """kho_test's folios_info: the u64 array itself, or (6.18) a kho_vmalloc holding it.

        A 16-byte value is a kho_vmalloc in a 6.18 hand-over, or when nr_folios says it cannot
        be the array itself."""
        if len(raw) == 16 and (self.kernel_version == "6.18" or nr not in (None, 2)):
            first, total_pages, flags, order = struct.unpack("<QIHH", raw)
            prop = Prop("folios_info", raw, "vmalloc",
                        {"first": first, "total_pages": total_pages, "flags": flags, "order": order})
            want = FDT_MAP_MAX if nr is None else nr * 8
            array = self.vmalloc(first, total_pages, order, where, path, want)
            if array is not None:
                prop.folios = _folios(array)[:nr]
            return prop
        if len(raw) % 8:
            self.problems.append(f"{where} {path}: folios_info is {len(raw)} bytes, not a u64 array")
            return _dtc_guess("folios_info", raw)
        return Prop("folios_info", raw, "folios", None, _folios(raw))

    def vmalloc(self, first: int, total_pages: int, order: int, where: str, path: str,
                want: int) -> bytes | None:
        """The first `want` bytes of a 6.18 kho_vmalloc area, following its chunk pages.

        Bounded whatever the struct says: a chunk seen twice ends the walk, and no more than
        `want` bytes (at most FDT_MAP_MAX) are read."""
        if self.read is None:
            self.notes.append(f"{where} {path}: folios_info's vmalloc chunks at 0x{first:x} not followed "
                              "(no RAM)")
            return None
        if order > MAX_PAGE_ORDER:
            self.problems.append(f"{where} {path}: folios_info's kho_vmalloc has order {order}")
            return None
        limit = min(total_pages * PAGE_SIZE, want, FDT_MAP_MAX)
        out = bytearray()
        chunk, seen = first, set()
        try:
            while chunk and len(out) < limit:
                if chunk in seen:
                    self.problems.append(f"{where} {path}: vmalloc chunk list loops back to 0x{chunk:x}")
                    return None
                seen.add(chunk)
                page = self.read(chunk, PAGE_SIZE)
                for i in range(KHO_VMALLOC_SIZE):
                    phys = struct.unpack_from("<Q", page, 8 + i * 8)[0]
                    if not phys or len(out) >= limit:
                        break
                    out += self.read(phys, PAGE_SIZE << order)
                chunk = struct.unpack_from("<Q", page, 0)[0]
        except (OSError, ValueError) as e:
            self.problems.append(f"{where} {path}: vmalloc chunk 0x{chunk:x} cannot be read: "
                                 f"{getattr(e, 'strerror', None) or e}")
            return None
        return bytes(out)

    # -- the chunk list --

    def mem_map(self, first: int, preserve_bits: int) -> MemMap:
        assert self.read is not None
        chunks: list[MemChunk] = []
        complete = True
        try:
            for chunk, contents in kho_mem_chunks_checked(self.read, first, preserve_bits,
                                                          self.ram_end or 1 << 64):
                chunks.append(MemChunk(chunk.phys, chunk.next, chunk.order, tuple(
                    MemBitmap(chunk.order, start, bitmap, bits)
                    for (start, bitmap), bits in zip(chunk.bitmaps, contents, strict=True))))
        except KhoMemMapError as e:
            where = f"chunk {len(chunks)} of the list at 0x{first:x}"
            self.problems.append(f"preserved-memory-map: {where}: {e}")
            self.notes.append("chunks and bitmaps are not preserved memory themselves: once a kernel booted "
                              "from this hand-over frees them (memblock_free_all), they hold other data")
            complete = False
        ranges = merge_ranges(r for chunk in chunks for elm in chunk.bitmaps for r in elm.ranges())
        return MemMap(first, chunks, ranges, complete)


def _folios(array: bytes) -> list[tuple[int, int]]:
    mask = PAGE_SIZE - 1
    return [(v & ~mask, v & mask) for (v,) in struct.iter_unpack("<Q", array[:len(array) // 8 * 8])]


def _printable_strings(raw: bytes) -> list[str] | None:
    """dtc's test for a string list: NUL-terminated, printable, no empty string inside."""
    if not raw or raw[-1] != 0 or raw[0] == 0:
        return None
    parts = raw[:-1].split(b"\0")
    if any(not p or any(c < 0x20 or c > 0x7e for c in p) for p in parts):
        return None
    return [p.decode() for p in parts]


def _dtc_guess(name: str, raw: bytes) -> Prop:
    """How dtc -O dts shows a property it knows nothing about."""
    strings = _printable_strings(raw)
    if strings is not None:
        return Prop(name, raw, "string" if len(strings) == 1 else "strings",
                    strings[0] if len(strings) == 1 else strings)
    if raw and len(raw) % 4 == 0:
        return Prop(name, raw, "cells", [v for (v,) in struct.iter_unpack(">I", raw)])
    return Prop(name, raw, "bytes", list(raw))


def _guess_version(read: Read, first: int, ram_end: int | None) -> tuple[str, str]:
    chunks: list[KhoMemChunk] = []
    try:
        for chunk, _ in kho_mem_chunks_checked(read, first, kho_preserve_bits((6, 16)), ram_end or 1 << 64):
            chunks.append(chunk)
    except KhoMemMapError:
        pass
    return guess_kernel_version(chunks, read)


def kho_decode(blob: bytes, read: Read | None = None, ram_end: int | None = None,
               kernel_version: str | None = None, phys: int | None = None) -> KhoDecode:
    """Decode a root KHO FDT (`blob`); follow its pointers through `read` when given.

    `kernel_version` picks the layouts ("6.16"/"6.17": 512-byte bitmaps and a u64 folios_info,
    "6.18": page bitmaps and a vmalloc'd one); None guesses from the chunk list, in `notes`.
    """
    notes = []
    value, length = libfdt.fdt_getprop(blob, 0, PROP_PRESERVED_MEMORY_MAP) \
        if libfdt.fdt_check_header(blob) == 0 else (None, 0)
    first = int.from_bytes(value, "little") if value is not None and length == 8 else None
    if kernel_version is None:
        kernel_version = "6.16"
        if read is not None and first is not None:
            kernel_version, why = _guess_version(read, first, ram_end)
            notes.append(why)
    dec = _Decoder(read, ram_end, kernel_version)
    dec.notes.extend(notes)
    if phys is not None:
        dec.visited.add(phys)
    fdt = dec.fdt(blob, phys, "root FDT")
    preserve_bits = kho_preserve_bits(tuple(int(x) for x in kernel_version.split(".")))
    result = KhoDecode(fdt, preserve_bits, kernel_version, None)
    if fdt.root is not None and fdt.root.compatible != KHO_FDT_COMPATIBLE:
        dec.problems.append(f"root FDT: compatible is {fdt.root.compatible!r}, not '{KHO_FDT_COMPATIBLE}' "
                            "(the kernel would not take this hand-over)")
    if fdt.root is not None and first is None:
        dec.problems.append(f"root FDT /: no 8-byte {PROP_PRESERVED_MEMORY_MAP} "
                            "(the kernel logs 'KHO: failed to get preserved memory bitmaps')")
    if first is not None:
        if read is None:
            dec.notes.append(f"{PROP_PRESERVED_MEMORY_MAP}: chunk list at 0x{first:x} not followed "
                             "(no RAM: give --mem FILE or a mount)")
        else:
            result.mem_map = dec.mem_map(first, preserve_bits)
    result.problems = dec.problems
    result.notes = dec.notes
    return result
