"""scripts/dtc/libfdt/fdt_rw.c: the in-place editing calls drivers/of/kexec.c makes.

The blob is a ``bytearray`` of the buffer's full size, as libfdt edits a C buffer:
every change splices bytes and moves the blocks after it, new properties go first in
their node, new names are appended to the string table (or share any existing suffix,
as ``fdt_find_string_`` finds them), and ``fdt_pack`` trims the buffer to the data.  So a
device tree the simulated kernel writes for kexec is byte-identical to the real one's.
Functions return 0 or libfdt's negative error codes, never raise.
"""

import struct

from sim.lib.fdt import (
    _LAST_COMP_VERSION,
    _OFF_DT_STRINGS,
    _OFF_DT_STRUCT,
    _OFF_MEM_RSVMAP,
    _PROP_HEADER_SIZE,
    _SIZE_DT_STRINGS,
    _SIZE_DT_STRUCT,
    _TOTALSIZE,
    _VERSION,
    FDT_BEGIN_NODE,
    FDT_END_NODE,
    FDT_ERR_BADLAYOUT,
    FDT_ERR_BADNCELLS,
    FDT_ERR_BADOFFSET,
    FDT_ERR_BADVALUE,
    FDT_ERR_BADVERSION,
    FDT_ERR_EXISTS,
    FDT_ERR_NOSPACE,
    FDT_ERR_NOTFOUND,
    FDT_ERR_TRUNCATED,
    FDT_NOP,
    FDT_PROP,
    _check_node_offset,
    _cstr,
    _getprop_pos,
    _hdr,
    _subnode_offset_namelen,
    _tagalign,
    fdt_check_header,
    fdt_getprop,
    fdt_next_tag,
)

FDT_HEADER_SIZE = 40
FDT_RESERVE_ENTRY_SIZE = 16
FDT_MAX_NCELLS = 4


def _set(fdt: bytearray, field: int, value: int) -> None:
    struct.pack_into(">I", fdt, field, value)


def fdt_num_mem_rsv(fdt: bytes | bytearray) -> int:
    """Entries before the terminating zero-size one; -FDT_ERR_TRUNCATED if it is missing."""
    off, end = _hdr(fdt, _OFF_MEM_RSVMAP), min(_hdr(fdt, _TOTALSIZE), len(fdt))
    i = 0
    while off + (i + 1) * FDT_RESERVE_ENTRY_SIZE <= end:
        if struct.unpack_from(">Q", fdt, off + i * FDT_RESERVE_ENTRY_SIZE + 8)[0] == 0:
            return i
        i += 1
    return -FDT_ERR_TRUNCATED


def fdt_get_mem_rsv(fdt: bytes | bytearray, n: int) -> tuple[int, int, int]:
    """(0, address, size) of reservation n, or (negative error, 0, 0)."""
    err = fdt_check_header(fdt)
    if err:
        return err, 0, 0
    off = _hdr(fdt, _OFF_MEM_RSVMAP) + n * FDT_RESERVE_ENTRY_SIZE
    if n < 0 or off + FDT_RESERVE_ENTRY_SIZE > min(_hdr(fdt, _TOTALSIZE), len(fdt)):
        return -FDT_ERR_BADOFFSET, 0, 0
    addr, size = struct.unpack_from(">QQ", fdt, off)
    return 0, addr, size


def _misordered(fdt: bytes | bytearray, mem_rsv_size: int, struct_size: int) -> bool:
    return (_hdr(fdt, _OFF_MEM_RSVMAP) < FDT_HEADER_SIZE
            or _hdr(fdt, _OFF_DT_STRUCT) < _hdr(fdt, _OFF_MEM_RSVMAP) + mem_rsv_size
            or _hdr(fdt, _OFF_DT_STRINGS) < _hdr(fdt, _OFF_DT_STRUCT) + struct_size
            or _hdr(fdt, _TOTALSIZE) < _hdr(fdt, _OFF_DT_STRINGS) + _hdr(fdt, _SIZE_DT_STRINGS))


def _rw_probe(fdt: bytearray) -> int:
    err = fdt_check_header(fdt)
    if err:
        return err
    if _hdr(fdt, _VERSION) < 17:
        return -FDT_ERR_BADVERSION
    if _misordered(fdt, (fdt_num_mem_rsv(fdt) + 1) * FDT_RESERVE_ENTRY_SIZE, _hdr(fdt, _SIZE_DT_STRUCT)):
        return -FDT_ERR_BADLAYOUT
    if _hdr(fdt, _VERSION) > 17:
        _set(fdt, _VERSION, 17)
    return 0


def _packblocks(old: bytes | bytearray, new: bytearray, mem_rsv_size: int, struct_size: int,
                strings_size: int) -> None:
    mem_rsv_off = FDT_HEADER_SIZE
    struct_off = mem_rsv_off + mem_rsv_size
    strings_off = struct_off + struct_size
    rsv = bytes(old[_hdr(old, _OFF_MEM_RSVMAP):_hdr(old, _OFF_MEM_RSVMAP) + mem_rsv_size])
    dt = bytes(old[_hdr(old, _OFF_DT_STRUCT):_hdr(old, _OFF_DT_STRUCT) + struct_size])
    strings = bytes(old[_hdr(old, _OFF_DT_STRINGS):_hdr(old, _OFF_DT_STRINGS) + strings_size])
    new[mem_rsv_off:struct_off] = rsv
    new[struct_off:strings_off] = dt
    new[strings_off:strings_off + strings_size] = strings
    _set(new, _OFF_MEM_RSVMAP, mem_rsv_off)
    _set(new, _OFF_DT_STRUCT, struct_off)
    _set(new, _SIZE_DT_STRUCT, struct_size)
    _set(new, _OFF_DT_STRINGS, strings_off)
    _set(new, _SIZE_DT_STRINGS, strings_size)


def fdt_open_into(fdt: bytes | bytearray, bufsize: int) -> tuple[int, bytearray]:
    """(0, a bufsize-byte editable copy) or (negative error, empty)."""
    err = fdt_check_header(fdt)
    if err:
        return err, bytearray()
    nrsv = fdt_num_mem_rsv(fdt)
    if nrsv < 0:
        return nrsv, bytearray()
    mem_rsv_size = (nrsv + 1) * FDT_RESERVE_ENTRY_SIZE
    if _hdr(fdt, _VERSION) < 17:
        return -FDT_ERR_BADVERSION, bytearray()       # the simulated kernels only see v17 blobs
    struct_size = _hdr(fdt, _SIZE_DT_STRUCT)
    buf = bytearray(bufsize)
    if not _misordered(fdt, mem_rsv_size, struct_size):
        if bufsize < _hdr(fdt, _TOTALSIZE):
            return -FDT_ERR_NOSPACE, bytearray()
        buf[:_hdr(fdt, _TOTALSIZE)] = fdt[:_hdr(fdt, _TOTALSIZE)]
        _set(buf, _VERSION, 17)
        _set(buf, _SIZE_DT_STRUCT, struct_size)
        _set(buf, _TOTALSIZE, bufsize)
        return 0, buf
    newsize = FDT_HEADER_SIZE + mem_rsv_size + struct_size + _hdr(fdt, _SIZE_DT_STRINGS)
    if bufsize < newsize:
        return -FDT_ERR_NOSPACE, bytearray()
    buf[:FDT_HEADER_SIZE] = fdt[:FDT_HEADER_SIZE]
    _packblocks(fdt, buf, mem_rsv_size, struct_size, _hdr(fdt, _SIZE_DT_STRINGS))
    _set(buf, _VERSION, 17)
    _set(buf, _LAST_COMP_VERSION, 16)
    _set(buf, _TOTALSIZE, bufsize)
    return 0, buf


def _data_size(fdt: bytearray) -> int:
    return _hdr(fdt, _OFF_DT_STRINGS) + _hdr(fdt, _SIZE_DT_STRINGS)


def _splice(fdt: bytearray, pos: int, oldlen: int, newlen: int) -> int:
    """fdt_splice_(): replace oldlen bytes at pos by newlen, moving everything up to the data end."""
    end = _data_size(fdt)
    if pos + oldlen > end or pos < 0:
        return -FDT_ERR_BADOFFSET
    if end - oldlen + newlen > _hdr(fdt, _TOTALSIZE):
        return -FDT_ERR_NOSPACE
    tail = bytes(fdt[pos + oldlen:end])
    fdt[pos + newlen:pos + newlen + len(tail)] = tail
    return 0


def _splice_struct(fdt: bytearray, pos: int, oldlen: int, newlen: int) -> int:
    err = _splice(fdt, pos, oldlen, newlen)
    if err:
        return err
    delta = newlen - oldlen
    _set(fdt, _SIZE_DT_STRUCT, _hdr(fdt, _SIZE_DT_STRUCT) + delta)
    _set(fdt, _OFF_DT_STRINGS, _hdr(fdt, _OFF_DT_STRINGS) + delta)
    return 0


def _splice_mem_rsv(fdt: bytearray, pos: int, oldn: int, newn: int) -> int:
    err = _splice(fdt, pos, oldn * FDT_RESERVE_ENTRY_SIZE, newn * FDT_RESERVE_ENTRY_SIZE)
    if err:
        return err
    delta = (newn - oldn) * FDT_RESERVE_ENTRY_SIZE
    _set(fdt, _OFF_DT_STRUCT, _hdr(fdt, _OFF_DT_STRUCT) + delta)
    _set(fdt, _OFF_DT_STRINGS, _hdr(fdt, _OFF_DT_STRINGS) + delta)
    return 0


def _find_add_string(fdt: bytearray, name: bytes) -> tuple[int, bool]:
    """Offset of name in the string table (any match, suffixes included) or appended; (error, False)."""
    strtab, size = _hdr(fdt, _OFF_DT_STRINGS), _hdr(fdt, _SIZE_DT_STRINGS)
    found = bytes(fdt[strtab:strtab + size]).find(name + b"\0")
    if found >= 0:
        return found, False
    err = _splice(fdt, strtab + size, 0, len(name) + 1)
    if err:
        return err, False
    fdt[strtab + size:strtab + size + len(name) + 1] = name + b"\0"
    _set(fdt, _SIZE_DT_STRINGS, size + len(name) + 1)
    return size, True


def fdt_add_mem_rsv(fdt: bytearray, address: int, size: int) -> int:
    err = _rw_probe(fdt)
    if err:
        return err
    pos = _hdr(fdt, _OFF_MEM_RSVMAP) + fdt_num_mem_rsv(fdt) * FDT_RESERVE_ENTRY_SIZE
    err = _splice_mem_rsv(fdt, pos, 0, 1)
    if err:
        return err
    struct.pack_into(">QQ", fdt, pos, address, size)
    return 0


def fdt_del_mem_rsv(fdt: bytearray, n: int) -> int:
    err = _rw_probe(fdt)
    if err:
        return err
    if n >= fdt_num_mem_rsv(fdt):
        return -FDT_ERR_NOTFOUND
    return _splice_mem_rsv(fdt, _hdr(fdt, _OFF_MEM_RSVMAP) + n * FDT_RESERVE_ENTRY_SIZE, 1, 0)


def fdt_delprop(fdt: bytearray, nodeoffset: int, name: str) -> int:
    err = _rw_probe(fdt)
    if err:
        return err
    pos, length = _getprop_pos(fdt, nodeoffset, _cstr(name))
    if pos is None:
        return length
    return _splice_struct(fdt, pos - _PROP_HEADER_SIZE, _PROP_HEADER_SIZE + _tagalign(length), 0)


def _add_property(fdt: bytearray, nodeoffset: int, name: bytes, length: int) -> tuple[int, int]:
    """fdt_add_property_(): a new property first in its node; (0, value position) or (error, 0)."""
    nextoffset = _check_node_offset(fdt, nodeoffset)
    if nextoffset < 0:
        return nextoffset, 0
    nameoff, allocated = _find_add_string(fdt, name)
    if nameoff < 0:
        return nameoff, 0
    pos = _hdr(fdt, _OFF_DT_STRUCT) + nextoffset
    err = _splice_struct(fdt, pos, 0, _PROP_HEADER_SIZE + _tagalign(length))
    if err:
        if allocated:      # fdt_del_last_string_()
            _set(fdt, _SIZE_DT_STRINGS, _hdr(fdt, _SIZE_DT_STRINGS) - len(name) - 1)
        return err, 0
    struct.pack_into(">III", fdt, pos, FDT_PROP, length, nameoff)
    return 0, pos + _PROP_HEADER_SIZE


def _prop_room(fdt: bytearray, nodeoffset: int, name: str, length: int, append: bool) -> tuple[int, int]:
    """Room for `length` value bytes in property name, replacing (setprop) or after (appendprop) its
    value, or in a new property first in the node: (0, where to write) or (error, 0)."""
    err = _rw_probe(fdt)
    if err:
        return err, 0
    cname = _cstr(name)
    pos, oldlen = _getprop_pos(fdt, nodeoffset, cname)
    if pos is None:
        if oldlen != -FDT_ERR_NOTFOUND:
            return oldlen, 0
        return _add_property(fdt, nodeoffset, cname, length)
    newlen = oldlen + length if append else length
    err = _splice_struct(fdt, pos, _tagalign(oldlen), _tagalign(newlen))
    if err:
        return err, 0
    struct.pack_into(">I", fdt, pos - 8, newlen)
    return 0, pos + (oldlen if append else 0)


def fdt_setprop(fdt: bytearray, nodeoffset: int, name: str, value: bytes) -> int:
    """fdt_setprop_placeholder() and the copy: resize in place, or add the property first."""
    err, pos = _prop_room(fdt, nodeoffset, name, len(value), append=False)
    if not err:
        fdt[pos:pos + len(value)] = value
    return err


def fdt_setprop_string(fdt: bytearray, nodeoffset: int, name: str, value: str) -> int:
    return fdt_setprop(fdt, nodeoffset, name, value.encode("utf-8", "surrogateescape") + b"\0")


def fdt_setprop_u64(fdt: bytearray, nodeoffset: int, name: str, value: int) -> int:
    return fdt_setprop(fdt, nodeoffset, name, struct.pack(">Q", value))


def fdt_appendprop(fdt: bytearray, nodeoffset: int, name: str, value: bytes) -> int:
    err, pos = _prop_room(fdt, nodeoffset, name, len(value), append=True)
    if not err:
        fdt[pos:pos + len(value)] = value
    return err


def _cells(fdt: bytes | bytearray, nodeoffset: int, name: str) -> int:
    value, length = fdt_getprop(fdt, nodeoffset, name)
    if value is None:
        return length
    if length != 4:
        return -FDT_ERR_BADNCELLS
    cells = struct.unpack(">I", value)[0]
    return -FDT_ERR_BADNCELLS if cells > FDT_MAX_NCELLS else cells


def fdt_address_cells(fdt: bytes | bytearray, nodeoffset: int) -> int:
    cells = _cells(fdt, nodeoffset, "#address-cells")
    if cells == 0:
        return -FDT_ERR_BADNCELLS
    return 2 if cells == -FDT_ERR_NOTFOUND else cells


def fdt_size_cells(fdt: bytes | bytearray, nodeoffset: int) -> int:
    cells = _cells(fdt, nodeoffset, "#size-cells")
    return 1 if cells == -FDT_ERR_NOTFOUND else cells


def _cells_bytes(value: int, cells: int) -> bytes | None:
    if value >> (32 * cells):
        return None
    return value.to_bytes(4 * cells, "big")


def fdt_appendprop_addrrange(fdt: bytearray, parent: int, nodeoffset: int, name: str, addr: int,
                             size: int) -> int:
    """Append <addr size> in the parent's #address-cells/#size-cells."""
    addr_cells = fdt_address_cells(fdt, parent)
    if addr_cells < 0:
        return addr_cells
    size_cells = fdt_size_cells(fdt, parent)
    if size_cells < 0:
        return size_cells
    a, s = _cells_bytes(addr, addr_cells), _cells_bytes(size, size_cells)
    if a is None or s is None:
        return -FDT_ERR_BADVALUE
    return fdt_appendprop(fdt, nodeoffset, name, a + s)


def fdt_add_subnode(fdt: bytearray, parentoffset: int, name: str) -> int:
    """A new empty node after the parent's properties (before its first child); its offset."""
    err = _rw_probe(fdt)
    if err:
        return err
    cname = _cstr(name)
    offset = _subnode_offset_namelen(fdt, parentoffset, cname)
    if offset >= 0:
        return -FDT_ERR_EXISTS
    if offset != -FDT_ERR_NOTFOUND:
        return offset
    tag, nextoffset = fdt_next_tag(fdt, parentoffset)
    if tag != FDT_BEGIN_NODE:
        return -FDT_ERR_BADOFFSET
    while True:
        offset = nextoffset
        tag, nextoffset = fdt_next_tag(fdt, offset)
        if tag not in (FDT_PROP, FDT_NOP):
            break
    nodelen = 8 + _tagalign(len(cname) + 1)
    pos = _hdr(fdt, _OFF_DT_STRUCT) + offset
    err = _splice_struct(fdt, pos, 0, nodelen)
    if err:
        return err
    node = struct.pack(">I", FDT_BEGIN_NODE) + cname.ljust(_tagalign(len(cname) + 1), b"\0")
    fdt[pos:pos + nodelen] = node + struct.pack(">I", FDT_END_NODE)
    return offset


def fdt_pack(fdt: bytearray) -> int:
    """Move the blocks together and cut the buffer to the data (totalsize and the bytearray)."""
    err = _rw_probe(fdt)
    if err:
        return err
    mem_rsv_size = (fdt_num_mem_rsv(fdt) + 1) * FDT_RESERVE_ENTRY_SIZE
    _packblocks(bytes(fdt), fdt, mem_rsv_size, _hdr(fdt, _SIZE_DT_STRUCT), _hdr(fdt, _SIZE_DT_STRINGS))
    size = _data_size(fdt)
    _set(fdt, _TOTALSIZE, size)
    del fdt[size:]
    return 0
