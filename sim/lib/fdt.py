"""scripts/dtc/libfdt (fdt.c, fdt_ro.c, fdt_sw.c): the sequential writer and the reader KHO uses.

The kernel builds its hand-over FDTs with libfdt's sequential writer and reads incoming ones
with libfdt, printing libfdt's return codes in its log lines.  So the blobs here are
byte-identical to libfdt's (string table built backwards, suffix sharing, stale bytes left
where libfdt leaves them), and the reader returns libfdt's offsets and error codes, including
on corrupt memory.  Functions keep libfdt's names; C out-parameters become returned tuples.

The reader works on ``bytes`` that stand for the memory the kernel can see.  Where libfdt
would read past the end of that memory, those bytes count as absent: header fields read 0,
and structure or string accesses fail exactly as accesses past ``totalsize`` do.  Nothing
raises on any input.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from sim.sizes import U64_MAX

FDT_MAGIC = 0xD00DFEED
# The magic of a blob still being written by the sequential writer (~FDT_MAGIC).
FDT_SW_MAGIC = 0x2FF20112

FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9
FDT_TAGSIZE = 4

FDT_FIRST_SUPPORTED_VERSION = 0x02
FDT_LAST_COMPATIBLE_VERSION = 0x10
FDT_LAST_SUPPORTED_VERSION = 0x11

FDT_V1_SIZE = 7 * 4
FDT_V2_SIZE = FDT_V1_SIZE + 4
FDT_V3_SIZE = FDT_V2_SIZE + 4
FDT_V16_SIZE = FDT_V3_SIZE
FDT_V17_SIZE = FDT_V16_SIZE + 4

FDT_ERR_NOTFOUND = 1
FDT_ERR_EXISTS = 2
FDT_ERR_NOSPACE = 3
FDT_ERR_BADOFFSET = 4
FDT_ERR_BADPATH = 5
FDT_ERR_BADPHANDLE = 6
FDT_ERR_BADSTATE = 7
FDT_ERR_TRUNCATED = 8
FDT_ERR_BADMAGIC = 9
FDT_ERR_BADVERSION = 10
FDT_ERR_BADSTRUCTURE = 11
FDT_ERR_BADLAYOUT = 12
FDT_ERR_INTERNAL = 13
FDT_ERR_BADNCELLS = 14
FDT_ERR_BADVALUE = 15

# Header field offsets (struct fdt_header, ten big-endian u32).
_MAGIC = 0
_TOTALSIZE = 4
_OFF_DT_STRUCT = 8
_OFF_DT_STRINGS = 12
_OFF_MEM_RSVMAP = 16
_VERSION = 20
_LAST_COMP_VERSION = 24
_SIZE_DT_STRINGS = 32
_SIZE_DT_STRUCT = 36

_HEADER_ALIGNED = 48  # sizeof(struct fdt_header) rounded up to a reserve entry (16)
_RESERVE_ENTRY_SIZE = 16
_PROP_HEADER_SIZE = 12  # struct fdt_property: tag, len, nameoff
_INT32_MAX = 0x7FFFFFFF
_U32 = 0xFFFFFFFF

Blob = bytes | bytearray


def _tagalign(n: int) -> int:
    return (n + FDT_TAGSIZE - 1) & ~(FDT_TAGSIZE - 1)


def _s32(v: int) -> int:
    """A u32 read from the blob as C's ``int`` sees it."""
    return v - (1 << 32) if v & 0x80000000 else v


def _cstr(s: str) -> bytes:
    """``s`` as a C string argument: up to its first NUL (strlen), without the NUL."""
    return s.encode("utf-8", "surrogateescape").split(b"\0", 1)[0]


def _hdr(fdt: Blob, field: int) -> int:
    """A header field; one that lies past the end of ``fdt`` reads 0."""
    if len(fdt) < field + 4:
        return 0
    return struct.unpack_from(">I", fdt, field)[0]


# ---------------------------------------------------------------------------------------------
# Sequential writer (fdt_sw.c)
# ---------------------------------------------------------------------------------------------


class FdtSw:
    """libfdt's sequential-write state machine over a fixed ``bytearray``.

    As in libfdt, all state lives in the buffer's header (magic ``FDT_SW_MAGIC`` and the
    size fields) until ``finish()``, so a half-built buffer holds exactly what the kernel's
    page would.  Methods return 0 or a negative libfdt error code.  ``create_err`` is what
    ``fdt_create`` returned: a buffer smaller than the header is left untouched (all zero)
    and every later call then fails with ``-FDT_ERR_BADMAGIC``, as libfdt's would.
    """

    def __init__(self, bufsize: int) -> None:
        if bufsize < 0:
            raise ValueError(f"negative FDT buffer size {bufsize}")
        self.buf = bytearray(bufsize)
        self.create_err = self._create()

    def _get(self, field: int) -> int:
        return _hdr(self.buf, field)

    def _set(self, field: int, value: int) -> None:
        struct.pack_into(">I", self.buf, field, value & _U32)

    def _create(self) -> int:
        if len(self.buf) < _HEADER_ALIGNED:
            return -FDT_ERR_NOSPACE
        self._set(_MAGIC, FDT_SW_MAGIC)
        self._set(_VERSION, FDT_LAST_SUPPORTED_VERSION)
        self._set(_LAST_COMP_VERSION, 0)  # fdt_create's flags
        self._set(_TOTALSIZE, len(self.buf))
        self._set(_OFF_MEM_RSVMAP, _HEADER_ALIGNED)
        self._set(_OFF_DT_STRUCT, _HEADER_ALIGNED)
        self._set(_OFF_DT_STRINGS, 0)
        return 0

    def _probe(self) -> int:
        magic = self._get(_MAGIC)
        if magic == FDT_MAGIC:
            return -FDT_ERR_BADSTATE
        if magic != FDT_SW_MAGIC:
            return -FDT_ERR_BADMAGIC
        return 0

    def _probe_memrsv(self) -> int:
        """Reserve-map state: between create and finish_reservemap (strings offset still 0)."""
        err = self._probe()
        if err == 0 and self._get(_OFF_DT_STRINGS) != 0:
            return -FDT_ERR_BADSTATE
        return err

    def _probe_struct(self) -> int:
        """Struct state: after finish_reservemap, before finish (strings offset = totalsize)."""
        err = self._probe()
        if err == 0 and self._get(_OFF_DT_STRINGS) != self._get(_TOTALSIZE):
            return -FDT_ERR_BADSTATE
        return err

    def _grab_space(self, n: int) -> int | None:
        """Append ``n`` bytes to the struct block; their buffer offset, or None if full."""
        offset = self._get(_SIZE_DT_STRUCT)
        spaceleft = self._get(_TOTALSIZE) - self._get(_OFF_DT_STRUCT) - self._get(_SIZE_DT_STRINGS)
        if n < 0 or offset + n > spaceleft:
            return None
        self._set(_SIZE_DT_STRUCT, offset + n)
        return self._get(_OFF_DT_STRUCT) + offset

    def _add_string(self, s: bytes) -> int:
        """Prepend NUL-terminated ``s`` to the string table growing down from the buffer end.

        Returns its (negative) offset from the end, or 0 when it would run into the struct.
        """
        strtabsize = self._get(_SIZE_DT_STRINGS)
        offset = -strtabsize - len(s)
        struct_top = self._get(_OFF_DT_STRUCT) + self._get(_SIZE_DT_STRUCT)
        pos = self._get(_TOTALSIZE) + offset
        if pos < struct_top:
            return 0
        self.buf[pos:pos + len(s)] = s
        self._set(_SIZE_DT_STRINGS, strtabsize + len(s))
        return offset

    def _find_add_string(self, s: bytes) -> tuple[int, bool]:
        """Reuse any NUL-terminated tail of the table equal to ``s``, else prepend it.

        The search runs from the lowest address, i.e. the most recently added string.
        """
        end = self._get(_TOTALSIZE)
        found = self.buf.find(s, end - self._get(_SIZE_DT_STRINGS), end)
        if found >= 0:
            return found - end, False
        return self._add_string(s), True

    def add_reservemap_entry(self, addr: int, size: int) -> int:
        err = self._probe_memrsv()
        if err:
            return err
        offset = self._get(_OFF_DT_STRUCT)
        if offset + _RESERVE_ENTRY_SIZE > self._get(_TOTALSIZE):
            return -FDT_ERR_NOSPACE
        struct.pack_into(">QQ", self.buf, offset, addr & U64_MAX, size & U64_MAX)
        self._set(_OFF_DT_STRUCT, offset + _RESERVE_ENTRY_SIZE)
        return 0

    def finish_reservemap(self) -> int:
        err = self.add_reservemap_entry(0, 0)
        if err:
            return err
        self._set(_OFF_DT_STRINGS, self._get(_TOTALSIZE))
        return 0

    def begin_node(self, name: str) -> int:
        err = self._probe_struct()
        if err:
            return err
        cname = _cstr(name) + b"\0"
        pos = self._grab_space(FDT_TAGSIZE + _tagalign(len(cname)))
        if pos is None:
            return -FDT_ERR_NOSPACE
        struct.pack_into(">I", self.buf, pos, FDT_BEGIN_NODE)
        self.buf[pos + FDT_TAGSIZE:pos + FDT_TAGSIZE + len(cname)] = cname
        return 0

    def end_node(self) -> int:
        err = self._probe_struct()
        if err:
            return err
        pos = self._grab_space(FDT_TAGSIZE)
        if pos is None:
            return -FDT_ERR_NOSPACE
        struct.pack_into(">I", self.buf, pos, FDT_END_NODE)
        return 0

    def property_placeholder(self, name: str, length: int) -> tuple[int, int | None]:
        """Reserve a ``length``-byte value now, to be written later at the returned offset.

        Returns ``(0, offset into buf)`` or ``(error, None)``.  The value bytes are left as
        they are (zero in a fresh buffer), as libfdt leaves them.
        """
        err = self._probe_struct()
        if err:
            return err, None
        cname = _cstr(name) + b"\0"
        nameoff, allocated = self._find_add_string(cname)
        if nameoff == 0:
            return -FDT_ERR_NOSPACE, None
        pos = self._grab_space(_PROP_HEADER_SIZE + _tagalign(length))
        if pos is None:
            if allocated:  # roll back the string (its bytes stay in the buffer, as in libfdt)
                self._set(_SIZE_DT_STRINGS, self._get(_SIZE_DT_STRINGS) - len(cname))
            return -FDT_ERR_NOSPACE, None
        struct.pack_into(">III", self.buf, pos, FDT_PROP, length & _U32, nameoff & _U32)
        return 0, pos + _PROP_HEADER_SIZE

    def property(self, name: str, value: bytes) -> int:
        err, pos = self.property_placeholder(name, len(value))
        if pos is None:
            return err
        self.buf[pos:pos + len(value)] = value
        return 0

    def property_string(self, name: str, s: str) -> int:
        return self.property(name, _cstr(s) + b"\0")

    def property_u32(self, name: str, v: int) -> int:
        """libfdt's big-endian cell (KHO's own integers are native-endian: use ``property``)."""
        return self.property(name, struct.pack(">I", v & _U32))

    def property_u64(self, name: str, v: int) -> int:
        """libfdt's big-endian u64 (KHO's own integers are native-endian: use ``property``)."""
        return self.property(name, struct.pack(">Q", v & U64_MAX))

    def property_native_u64(self, name: str, v: int) -> int:
        """A u64 as KHO stores its own (``fdt_property(fdt, name, &v, sizeof(v))``): in the CPU's byte
        order, little-endian on x86_64 and arm64, where ``property_u64`` writes a big-endian cell."""
        return self.property(name, struct.pack("<Q", v & U64_MAX))

    def finish(self) -> int:
        """Terminate the struct block, move the strings behind it and fix up name offsets."""
        err = self._probe_struct()
        if err:
            return err
        pos = self._grab_space(FDT_TAGSIZE)
        if pos is None:
            return -FDT_ERR_NOSPACE
        struct.pack_into(">I", self.buf, pos, FDT_END)

        strsize = self._get(_SIZE_DT_STRINGS)
        old = self._get(_TOTALSIZE) - strsize
        new = self._get(_OFF_DT_STRUCT) + self._get(_SIZE_DT_STRUCT)
        self.buf[new:new + strsize] = self.buf[old:old + strsize]  # memmove: the old copy stays
        self._set(_OFF_DT_STRINGS, new)

        offset = 0
        while True:
            tag, nextoffset = fdt_next_tag(self.buf, offset)
            if tag == FDT_END:
                break
            if tag == FDT_PROP:
                field = self._get(_OFF_DT_STRUCT) + offset + 8
                nameoff = struct.unpack_from(">I", self.buf, field)[0]
                struct.pack_into(">I", self.buf, field, (nameoff + strsize) & _U32)
            offset = nextoffset
        if nextoffset < 0:
            return nextoffset

        self._set(_TOTALSIZE, new + strsize)
        self._set(_LAST_COMP_VERSION, FDT_LAST_COMPATIBLE_VERSION)
        self._set(_MAGIC, FDT_MAGIC)
        return 0

    def totalsize(self) -> int:
        """The header's totalsize: the blob's length after ``finish()``, the buffer's before."""
        return self._get(_TOTALSIZE)


# ---------------------------------------------------------------------------------------------
# Header checks (fdt.c)
# ---------------------------------------------------------------------------------------------


def fdt_totalsize(fdt: Blob) -> int:
    return _hdr(fdt, _TOTALSIZE)


def _header_size(version: int) -> int:
    if version <= 1:
        return FDT_V1_SIZE
    if version <= 2:
        return FDT_V2_SIZE
    if version <= 3:
        return FDT_V3_SIZE
    if version <= 16:
        return FDT_V16_SIZE
    return FDT_V17_SIZE


def _check_off(hdrsize: int, totalsize: int, off: int) -> bool:
    return hdrsize <= off <= totalsize


def _check_block(hdrsize: int, totalsize: int, base: int, size: int) -> bool:
    return _check_off(hdrsize, totalsize, base) and _check_off(hdrsize, totalsize, base + size)


def fdt_check_header(fdt: Blob) -> int:
    """libfdt's header sanity check, with ``len(fdt)`` as the buffer size.

    The buffer-size checks are libfdt's own (``fdt_check_full``): too short for the header
    → TRUNCATED before anything else; header fine but ``totalsize`` beyond the buffer →
    TRUNCATED last.  In between, ``fdt_check_header``'s checks in its order.
    """
    if len(fdt) < FDT_V1_SIZE or len(fdt) < _header_size(_hdr(fdt, _VERSION)):
        return -FDT_ERR_TRUNCATED
    if _hdr(fdt, _MAGIC) != FDT_MAGIC:
        return -FDT_ERR_BADMAGIC
    version = _hdr(fdt, _VERSION)
    last_comp = _hdr(fdt, _LAST_COMP_VERSION)
    if version < FDT_FIRST_SUPPORTED_VERSION or last_comp > FDT_LAST_SUPPORTED_VERSION:
        return -FDT_ERR_BADVERSION
    if version < last_comp:
        return -FDT_ERR_BADVERSION
    hdrsize = _header_size(version)
    totalsize = _hdr(fdt, _TOTALSIZE)
    if totalsize < hdrsize or totalsize > _INT32_MAX:
        return -FDT_ERR_TRUNCATED
    if not _check_off(hdrsize, totalsize, _hdr(fdt, _OFF_MEM_RSVMAP)):
        return -FDT_ERR_TRUNCATED
    if version < 17:
        if not _check_off(hdrsize, totalsize, _hdr(fdt, _OFF_DT_STRUCT)):
            return -FDT_ERR_TRUNCATED
    elif not _check_block(hdrsize, totalsize, _hdr(fdt, _OFF_DT_STRUCT), _hdr(fdt, _SIZE_DT_STRUCT)):
        return -FDT_ERR_TRUNCATED
    if not _check_block(hdrsize, totalsize, _hdr(fdt, _OFF_DT_STRINGS), _hdr(fdt, _SIZE_DT_STRINGS)):
        return -FDT_ERR_TRUNCATED
    if totalsize > len(fdt):
        return -FDT_ERR_TRUNCATED
    return 0


def _ro_probe(fdt: Blob) -> int:
    """libfdt's minimal check before read-only calls: totalsize, or a negative error."""
    magic = _hdr(fdt, _MAGIC)
    if magic == FDT_MAGIC:
        if (_hdr(fdt, _VERSION) < FDT_FIRST_SUPPORTED_VERSION
                or _hdr(fdt, _LAST_COMP_VERSION) > FDT_LAST_SUPPORTED_VERSION):
            return -FDT_ERR_BADVERSION
    elif magic == FDT_SW_MAGIC:
        if _hdr(fdt, _SIZE_DT_STRUCT) == 0:
            return -FDT_ERR_BADSTATE
    else:
        return -FDT_ERR_BADMAGIC
    totalsize = _hdr(fdt, _TOTALSIZE)
    return totalsize if totalsize < _INT32_MAX else -FDT_ERR_TRUNCATED


# ---------------------------------------------------------------------------------------------
# Structure walking (fdt.c)
# ---------------------------------------------------------------------------------------------


def _struct_end(fdt: Blob) -> int:
    """Buffer offset where readable structure bytes end (fdt_offset_ptr's bounds)."""
    end = min(_hdr(fdt, _TOTALSIZE), len(fdt))
    if _hdr(fdt, _VERSION) >= 0x11:
        end = min(end, _hdr(fdt, _OFF_DT_STRUCT) + _hdr(fdt, _SIZE_DT_STRUCT))
    return end


def fdt_next_tag(fdt: Blob, startoffset: int) -> tuple[int, int]:
    """The tag at ``startoffset`` and the offset of the next one (negative error if none).

    A premature end reads as ``FDT_END`` with a negative next offset.  (libfdt's guard
    against property lengths that overflow an int needs no twin here: Python does not wrap,
    so such a property simply runs past the readable structure, with the same result.)
    """
    base = _hdr(fdt, _OFF_DT_STRUCT)
    limit = _struct_end(fdt) - base  # struct offsets o with o + n <= limit are readable

    if startoffset < 0 or startoffset + FDT_TAGSIZE > limit:
        return FDT_END, -FDT_ERR_TRUNCATED
    tag = struct.unpack_from(">I", fdt, base + startoffset)[0]
    offset = startoffset + FDT_TAGSIZE

    if tag == FDT_BEGIN_NODE:
        nul = fdt.find(b"\0", base + offset, base + limit)
        if nul < 0:
            return FDT_END, -FDT_ERR_BADSTRUCTURE
        offset = nul - base + 1
    elif tag == FDT_PROP:
        if offset + 4 > limit:
            return FDT_END, -FDT_ERR_BADSTRUCTURE
        plen = struct.unpack_from(">I", fdt, base + offset)[0]
        offset += _PROP_HEADER_SIZE - FDT_TAGSIZE + plen
        if _hdr(fdt, _VERSION) < 0x10 and plen >= 8 and (offset - plen) % 8:
            offset += 4  # pre-v16 blobs 8-align values of 8 bytes or more
    elif tag not in (FDT_END, FDT_END_NODE, FDT_NOP):
        return FDT_END, -FDT_ERR_BADSTRUCTURE

    if offset > limit:
        return FDT_END, -FDT_ERR_BADSTRUCTURE
    return tag, _tagalign(offset)


def _check_node_offset(fdt: Blob, offset: int) -> int:
    if offset < 0 or offset % FDT_TAGSIZE:
        return -FDT_ERR_BADOFFSET
    tag, nextoffset = fdt_next_tag(fdt, offset)
    return nextoffset if tag == FDT_BEGIN_NODE else -FDT_ERR_BADOFFSET


def _check_prop_offset(fdt: Blob, offset: int) -> int:
    if offset < 0 or offset % FDT_TAGSIZE:
        return -FDT_ERR_BADOFFSET
    tag, nextoffset = fdt_next_tag(fdt, offset)
    return nextoffset if tag == FDT_PROP else -FDT_ERR_BADOFFSET


def fdt_next_node(fdt: Blob, offset: int, depth: int) -> tuple[int, int]:
    """The next node in document order (-1 for the first) and the updated depth.

    As in libfdt, leaving the starting depth returns the offset after the END_NODE with a
    negative depth.  (libfdt's NULL-depth mode is not offered: nothing here needs it.)
    """
    nextoffset = 0
    if offset >= 0:
        nextoffset = _check_node_offset(fdt, offset)
        if nextoffset < 0:
            return nextoffset, depth
    while True:
        offset = nextoffset
        tag, nextoffset = fdt_next_tag(fdt, offset)
        if tag == FDT_BEGIN_NODE:
            return offset, depth + 1
        if tag == FDT_END_NODE:
            depth -= 1
            if depth < 0:
                return nextoffset, depth
        elif tag == FDT_END:
            return (-FDT_ERR_NOTFOUND if nextoffset >= 0 else nextoffset), depth


def fdt_first_subnode(fdt: Blob, offset: int) -> int:
    offset, depth = fdt_next_node(fdt, offset, 0)
    if offset < 0 or depth != 1:
        return -FDT_ERR_NOTFOUND
    return offset


def fdt_next_subnode(fdt: Blob, offset: int) -> int:
    depth = 1
    while True:
        offset, depth = fdt_next_node(fdt, offset, depth)
        if offset < 0 or depth < 1:
            return -FDT_ERR_NOTFOUND
        if depth == 1:
            return offset


def fdt_for_each_subnode(fdt: Blob, parent: int) -> Iterator[int]:
    """The children of ``parent``, as libfdt's macro visits them (errors end the walk)."""
    node = fdt_first_subnode(fdt, parent)
    while node >= 0:
        yield node
        node = fdt_next_subnode(fdt, node)


# ---------------------------------------------------------------------------------------------
# Read-only accessors (fdt_ro.c)
# ---------------------------------------------------------------------------------------------


def _get_string(fdt: Blob, stroffset: int) -> bytes | None:
    """The name at ``stroffset`` in the strings block, or None where libfdt fails."""
    totalsize = _ro_probe(fdt)
    if totalsize < 0:
        return None
    absoffset = (stroffset + _hdr(fdt, _OFF_DT_STRINGS)) & _U32
    if absoffset >= totalsize:
        return None
    n = totalsize - absoffset
    size_strings = _hdr(fdt, _SIZE_DT_STRINGS)
    if _hdr(fdt, _MAGIC) == FDT_MAGIC:
        if stroffset < 0:
            return None
        if _hdr(fdt, _VERSION) >= 17:
            if stroffset >= size_strings:
                return None
            n = min(n, size_strings - stroffset)
    else:  # a sequential-write blob: offsets count back from the end
        if stroffset >= 0 or -stroffset > size_strings:
            return None
        n = min(n, -stroffset)
    nul = fdt.find(b"\0", absoffset, min(absoffset + n, len(fdt)))
    return None if nul < 0 else bytes(fdt[absoffset:nul])


def _get_name(fdt: Blob, nodeoffset: int) -> tuple[bytes | None, int]:
    err = _ro_probe(fdt)
    if err >= 0:
        err = _check_node_offset(fdt, nodeoffset)
    if err < 0:
        return None, err
    start = _hdr(fdt, _OFF_DT_STRUCT) + nodeoffset + FDT_TAGSIZE
    name = bytes(fdt[start:fdt.find(b"\0", start)])  # the NUL exists: the offset checked out
    if _hdr(fdt, _VERSION) < 0x10:  # old blobs store full paths: give the leaf, as v16 does
        slash = name.rfind(b"/")
        if slash < 0:
            return None, -FDT_ERR_BADSTRUCTURE
        name = name[slash + 1:]
    return name, len(name)


def fdt_get_name(fdt: Blob, nodeoffset: int) -> str | None:
    """The node's name (undecodable bytes kept as surrogates, like ``os.fsdecode``); None on error."""
    name, _ = _get_name(fdt, nodeoffset)
    return None if name is None else name.decode("utf-8", "surrogateescape")


def _nextprop(fdt: Blob, offset: int) -> int:
    while True:
        tag, nextoffset = fdt_next_tag(fdt, offset)
        if tag == FDT_END:
            return -FDT_ERR_BADSTRUCTURE if nextoffset >= 0 else nextoffset
        if tag == FDT_PROP:
            return offset
        if tag != FDT_NOP:
            return -FDT_ERR_NOTFOUND
        offset = nextoffset


def fdt_first_property_offset(fdt: Blob, nodeoffset: int) -> int:
    offset = _check_node_offset(fdt, nodeoffset)
    return offset if offset < 0 else _nextprop(fdt, offset)


def fdt_next_property_offset(fdt: Blob, offset: int) -> int:
    offset = _check_prop_offset(fdt, offset)
    return offset if offset < 0 else _nextprop(fdt, offset)


def _prop_at(fdt: Blob, offset: int) -> tuple[bytes | None, int, int]:
    """The name, value buffer offset and length of the (checked) property at ``offset``."""
    pos = _hdr(fdt, _OFF_DT_STRUCT) + offset
    plen, nameoff = struct.unpack_from(">II", fdt, pos + 4)
    data = pos + _PROP_HEADER_SIZE
    if _hdr(fdt, _VERSION) < 0x10 and (offset + _PROP_HEADER_SIZE) % 8 and plen >= 8:
        data += 4
    return _get_string(fdt, _s32(nameoff)), data, plen


def _getprop_pos(fdt: Blob, nodeoffset: int, name: bytes) -> tuple[int | None, int]:
    """Buffer offset of the value of property ``name`` and its length, or (None, error)."""
    offset = fdt_first_property_offset(fdt, nodeoffset)
    while offset >= 0:
        pname, data, plen = _prop_at(fdt, offset)
        if pname == name:
            return data, plen
        offset = fdt_next_property_offset(fdt, offset)
    return None, offset


def fdt_getprop_by_offset(fdt: Blob, offset: int) -> tuple[str | None, bytes | None, int]:
    """``(name, value, length)`` of the property at ``offset``, or ``(None, None, negative error)``."""
    err = _check_prop_offset(fdt, offset)
    if err < 0:
        return None, None, err
    name, data, plen = _prop_at(fdt, offset)
    if name is None:
        return None, None, -FDT_ERR_BADSTRUCTURE
    return name.decode("utf-8", "surrogateescape"), bytes(fdt[data:data + plen]), plen


def fdt_getprop(fdt: Blob, nodeoffset: int, name: str) -> tuple[bytes | None, int]:
    """``(value, length)``, or ``(None, negative error)``."""
    pos, length = _getprop_pos(fdt, nodeoffset, _cstr(name))
    if pos is None:
        return None, length
    return bytes(fdt[pos:pos + length]), length


def _stringlist_contains(fdt: Blob, pos: int, listlen: int, s: bytes) -> bool:
    """libfdt's stringlist match, which compares ``len(s) + 1`` bytes even when only
    ``len(s)`` remain in the list (so an unterminated last string can match on the byte
    that follows it in memory)."""
    needle = s + b"\0"
    while listlen >= len(s):
        if fdt[pos:pos + len(needle)] == needle:
            return True
        nul = fdt.find(b"\0", pos, pos + listlen)
        if nul < 0:
            return False
        listlen -= nul - pos + 1
        pos = nul + 1
    return False


def fdt_node_check_compatible(fdt: Blob, nodeoffset: int, compatible: str) -> int:
    """0 if ``compatible`` is listed, 1 if not, the getprop error (-NOTFOUND…) if no property."""
    pos, length = _getprop_pos(fdt, nodeoffset, b"compatible")
    if pos is None:
        return length
    return 0 if _stringlist_contains(fdt, pos, length, _cstr(compatible)) else 1


def _nodename_eq(fdt: Blob, offset: int, s: bytes) -> bool:
    """Name match, where ``s`` without a unit address also matches ``s@unit``."""
    name, _ = _get_name(fdt, offset)
    if name is None or not name.startswith(s):
        return False
    if len(name) == len(s):
        return True
    return b"@" not in s and name[len(s)] == ord("@")


def _subnode_offset_namelen(fdt: Blob, offset: int, name: bytes) -> int:
    err = _ro_probe(fdt)
    if err < 0:
        return err
    depth = 0
    while offset >= 0 and depth >= 0:
        if depth == 1 and _nodename_eq(fdt, offset, name):
            return offset
        offset, depth = fdt_next_node(fdt, offset, depth)
    if depth < 0:
        return -FDT_ERR_NOTFOUND
    return offset


def fdt_subnode_offset(fdt: Blob, parentoffset: int, name: str) -> int:
    """Offset of child ``name`` (``name`` may omit the ``@unit`` part), or a negative error."""
    return _subnode_offset_namelen(fdt, parentoffset, _cstr(name))


def _get_alias(fdt: Blob, name: bytes) -> bytes | None:
    """The path an ``/aliases`` property names, if it is a NUL-terminated absolute path."""
    aliases = _path_offset(fdt, b"/aliases")
    if aliases < 0:
        return None
    pos, length = _getprop_pos(fdt, aliases, name)
    if pos is None or length <= 0 or fdt[pos + length - 1] != 0 or fdt[pos] != ord("/"):
        return None
    return bytes(fdt[pos:fdt.find(b"\0", pos)])


def _path_offset(fdt: Blob, path: bytes) -> int:
    err = _ro_probe(fdt)
    if err < 0:
        return err
    if not path:
        return -FDT_ERR_BADPATH
    end = len(path)
    p = 0
    offset = 0
    if not path.startswith(b"/"):
        q = path.find(b"/")
        if q < 0:
            q = end
        alias = _get_alias(fdt, path[:q])
        if alias is None:
            return -FDT_ERR_BADPATH
        offset = _path_offset(fdt, alias)
        p = q
    while p < end:
        while path[p] == ord("/"):
            p += 1
            if p == end:
                return offset
        q = path.find(b"/", p)
        if q < 0:
            q = end
        offset = _subnode_offset_namelen(fdt, offset, path[p:q])
        if offset < 0:
            return offset
        p = q
    return offset


def fdt_path_offset(fdt: Blob, path: str) -> int:
    """Offset of the node at ``path`` (absolute, or starting with an alias), or an error."""
    return _path_offset(fdt, _cstr(path))
