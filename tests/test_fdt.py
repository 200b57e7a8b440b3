"""sim.lib.fdt against the spec's byte vectors, the real dtc, and libfdt itself (pylibfdt).

libfdt is the authority: the writer must leave the very same buffer (stale bytes included)
and return the same codes for any call sequence, and the reader must return the same
offsets, values and error codes on the same memory, corrupt or not.
"""

from __future__ import annotations

import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import libfdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_vectors import MEMBLOCK_DTS, MEMBLOCK_VECTOR, ROOT_DTS, ROOT_VECTOR

from sim.lib.fdt import (
    FDT_END,
    FDT_ERR_BADMAGIC,
    FDT_ERR_BADOFFSET,
    FDT_ERR_BADSTATE,
    FDT_ERR_BADSTRUCTURE,
    FDT_ERR_BADVERSION,
    FDT_ERR_NOSPACE,
    FDT_ERR_NOTFOUND,
    FDT_ERR_TRUNCATED,
    FDT_NOP,
    FdtSw,
    fdt_check_header,
    fdt_first_property_offset,
    fdt_first_subnode,
    fdt_for_each_subnode,
    fdt_get_name,
    fdt_getprop,
    fdt_next_node,
    fdt_next_property_offset,
    fdt_next_subnode,
    fdt_next_tag,
    fdt_node_check_compatible,
    fdt_path_offset,
    fdt_subnode_offset,
    fdt_totalsize,
)

PAGE_SIZE = 4096


def le64(v: int) -> bytes:
    return struct.pack("<Q", v)


def kho_root_fdt(pmm: int, subtrees: list[tuple[str, int]]) -> tuple[int, bytes]:
    """kho_finalize()'s calls (kho.md §2), errors OR-ed as the kernel does."""
    sw = FdtSw(PAGE_SIZE)
    err = sw.create_err
    err |= sw.finish_reservemap()
    err |= sw.begin_node("")
    err |= sw.property_string("compatible", "kho-v1")
    ph_err, pmm_off = sw.property_placeholder("preserved-memory-map", 8)
    err |= ph_err
    for name, phys in subtrees:  # kho_add_subtree() from the notifier chain
        err |= sw.begin_node(name)
        err |= sw.property("fdt", le64(phys))
        err |= sw.end_node()
    assert pmm_off is not None
    sw.buf[pmm_off:pmm_off + 8] = le64(pmm)
    err |= sw.end_node()
    err |= sw.finish()
    return err, bytes(sw.buf[:sw.totalsize()])


def memblock_fdt(regions: list[tuple[str, int, int]]) -> tuple[int, bytes]:
    """prepare_kho_fdt()'s calls (kho.md §3)."""
    sw = FdtSw(PAGE_SIZE)
    err = sw.create_err
    err |= sw.finish_reservemap()
    err |= sw.begin_node("")
    err |= sw.property_string("compatible", "memblock-v1")
    for name, start, size in regions:
        err |= sw.begin_node(name)
        err |= sw.property_string("compatible", "reserve-mem-v1")
        err |= sw.property("start", le64(start))
        err |= sw.property("size", le64(size))
        err |= sw.end_node()
    err |= sw.end_node()
    err |= sw.finish()
    return err, bytes(sw.buf[:sw.totalsize()])


def root_vector_blob() -> bytes:
    err, blob = kho_root_fdt(0x116BE4000, [("memblock", 0x100151000)])
    assert err == 0
    return blob


def memblock_vector_blob() -> bytes:
    err, blob = memblock_fdt([("n1", 0x46BC00000, 0x4000000), ("n2", 0x467C00000, 0x4000000)])
    assert err == 0
    return blob


# --- the spec's vectors --------------------------------------------------------------------


def test_root_vector_byte_for_byte() -> None:
    assert root_vector_blob() == ROOT_VECTOR


def test_memblock_vector_byte_for_byte() -> None:
    assert memblock_vector_blob() == MEMBLOCK_VECTOR


@pytest.mark.parametrize(("blob", "dts"), [(ROOT_VECTOR, ROOT_DTS), (MEMBLOCK_VECTOR, MEMBLOCK_DTS)],
                         ids=["root", "memblock"])
def test_dtc_decompiles_vectors_as_the_spec_shows(tmp_path: Path, blob: bytes, dts: str) -> None:
    path = tmp_path / "fdt.dtb"
    path.write_bytes(blob)
    out = subprocess.run(["/usr/bin/dtc", "-I", "dtb", "-O", "dts", str(path)],
                         capture_output=True, text=True, check=True)
    assert out.stdout == dts


def test_vectors_pass_libfdts_full_check() -> None:
    for blob in (ROOT_VECTOR, MEMBLOCK_VECTOR):
        assert libfdt.fdt_check_full(bytearray(blob), len(blob)) == 0


def test_reader_on_root_vector() -> None:
    blob = ROOT_VECTOR
    assert fdt_check_header(blob) == 0
    assert fdt_totalsize(blob) == 0xC4
    memblock = fdt_subnode_offset(blob, 0, "memblock")
    assert memblock == 0x30 and fdt_path_offset(blob, "/memblock") == memblock
    assert list(fdt_for_each_subnode(blob, 0)) == [memblock]
    assert fdt_get_name(blob, memblock) == "memblock" and fdt_get_name(blob, 0) == ""
    assert fdt_getprop(blob, memblock, "fdt") == (le64(0x100151000), 8)
    assert fdt_getprop(blob, 0, "preserved-memory-map") == (le64(0x116BE4000), 8)
    assert fdt_node_check_compatible(blob, 0, "kho-v1") == 0


# --- writer: state machine, space, strings -------------------------------------------------


def test_strings_are_prepended_and_suffixes_shared() -> None:
    sw = FdtSw(256)
    assert sw.finish_reservemap() == 0 and sw.begin_node("") == 0
    assert sw.property("compatible", b"") == 0
    assert sw.property("patible", b"") == 0  # a NUL-terminated tail of "compatible": shared
    assert sw.property("x", b"") == 0
    assert sw.end_node() == 0 and sw.finish() == 0
    blob = bytes(sw.buf[:sw.totalsize()])
    assert blob.endswith(b"x\0compatible\0")
    assert fdt_getprop(blob, 0, "patible") == (b"", 0)


def test_states_as_libfdt_checks_them() -> None:
    sw = FdtSw(PAGE_SIZE)
    assert sw.begin_node("") == -FDT_ERR_BADSTATE  # reserve map not finished yet
    assert sw.add_reservemap_entry(0x1000, 0x2000) == 0
    assert sw.finish_reservemap() == 0
    assert sw.add_reservemap_entry(0, 1) == -FDT_ERR_BADSTATE
    assert sw.begin_node("") == 0 and sw.end_node() == 0 and sw.finish() == 0
    assert sw.finish() == -FDT_ERR_BADSTATE and sw.property_u32("x", 1) == -FDT_ERR_BADSTATE
    assert fdt_check_header(bytes(sw.buf[:sw.totalsize()])) == 0


def test_buffer_smaller_than_header() -> None:
    sw = FdtSw(47)
    assert sw.create_err == -FDT_ERR_NOSPACE
    assert sw.buf == bytearray(47)
    assert sw.finish_reservemap() == -FDT_ERR_BADMAGIC  # untouched memory has no magic


def test_nospace_when_struct_meets_strings() -> None:
    sw = FdtSw(48 + 16 + 8)
    assert sw.finish_reservemap() == 0 and sw.begin_node("") == 0  # 8 bytes: the page is full
    assert sw.property("a", b"") == -FDT_ERR_NOSPACE
    assert sw.end_node() == -FDT_ERR_NOSPACE and sw.finish() == -FDT_ERR_NOSPACE


def test_c_strings_stop_at_nul() -> None:
    sw = FdtSw(PAGE_SIZE)
    sw.finish_reservemap()
    sw.begin_node("a\0ignored")
    sw.property_string("s\0x", "v\0w")
    sw.end_node()
    assert sw.finish() == 0
    blob = bytes(sw.buf[:sw.totalsize()])
    assert fdt_get_name(blob, 0) == "a" and fdt_getprop(blob, 0, "s") == (b"v\0", 2)


# --- reader: the codes the kernel prints ---------------------------------------------------


def with_word(blob: bytes, offset: int, value: int) -> bytes:
    out = bytearray(blob)
    struct.pack_into(">I", out, offset, value)
    return bytes(out)


def test_check_header_codes() -> None:
    blob = root_vector_blob()
    assert fdt_check_header(bytes(PAGE_SIZE)) == -FDT_ERR_BADMAGIC == -9
    assert fdt_check_header(with_word(blob, 20, 1)) == -FDT_ERR_BADVERSION == -10  # version < 2
    assert fdt_check_header(with_word(blob, 24, 18)) == -FDT_ERR_BADVERSION  # last_comp_version
    assert fdt_check_header(with_word(with_word(blob, 20, 16), 24, 17)) == -FDT_ERR_BADVERSION
    assert fdt_check_header(with_word(blob, 4, 0x27)) == -FDT_ERR_TRUNCATED == -8  # < header
    assert fdt_check_header(with_word(blob, 32, 0x1000)) == -FDT_ERR_TRUNCATED  # strings past end
    assert fdt_check_header(blob[:-1]) == -FDT_ERR_TRUNCATED  # buffer shorter than totalsize
    assert fdt_check_header(blob[:20]) == -FDT_ERR_TRUNCATED
    assert fdt_check_header(blob + bytes(100)) == 0


def test_compatible_and_child_lookup_codes() -> None:
    blob = memblock_vector_blob()
    n1 = fdt_subnode_offset(blob, 0, "n1")
    assert n1 > 0
    assert fdt_node_check_compatible(blob, 0, "memblock-v1") == 0
    assert fdt_node_check_compatible(blob, n1, "memblock-v1") == 1
    assert fdt_node_check_compatible(blob, n1, "reserve-mem") == 1  # whole strings only
    assert fdt_subnode_offset(blob, 0, "n3") == -FDT_ERR_NOTFOUND == -1
    root = root_vector_blob()
    memblock = fdt_subnode_offset(root, 0, "memblock")
    assert fdt_node_check_compatible(root, memblock, "memblock-v1") == -FDT_ERR_NOTFOUND
    assert fdt_node_check_compatible(blob, 3, "x") == -FDT_ERR_BADOFFSET
    assert fdt_subnode_offset(bytes(PAGE_SIZE), 0, "n1") == -FDT_ERR_BADMAGIC


def test_unit_address_and_paths() -> None:
    sw = FdtSw(PAGE_SIZE)
    sw.finish_reservemap()
    sw.begin_node("")
    sw.begin_node("aliases")
    sw.property_string("mb", "/memory@0/x")
    sw.property_string("rel", "memory@0")  # not absolute: libfdt refuses it
    sw.property("raw", b"/memory@0")  # not NUL-terminated: refused too
    sw.property_string("", "/memory@0")  # an empty path is refused before any alias lookup
    sw.end_node()
    sw.begin_node("memory@0")
    sw.begin_node("x")
    sw.end_node()
    sw.end_node()
    sw.begin_node("odd@1@2")
    sw.end_node()
    sw.end_node()
    assert sw.finish() == 0
    blob = bytes(sw.buf[:sw.totalsize()])
    mem = fdt_subnode_offset(blob, 0, "memory")
    assert mem > 0 and fdt_subnode_offset(blob, 0, "memory@0") == mem
    assert fdt_subnode_offset(blob, 0, "memory@1") == -FDT_ERR_NOTFOUND
    assert fdt_subnode_offset(blob, 0, "odd") > 0  # up to the first '@' …
    assert fdt_subnode_offset(blob, 0, "odd@1") == -FDT_ERR_NOTFOUND  # … only without one
    x = fdt_path_offset(blob, "//memory//x/")
    assert x == fdt_first_subnode(blob, mem) and fdt_path_offset(blob, "/") == 0
    assert fdt_path_offset(blob, "mb") == x
    assert fdt_path_offset(blob, "nope/x") == -5  # -FDT_ERR_BADPATH
    for path in ["mb", "mb/", "rel", "raw", "rel/x", "", "/memory", "/memory@0/x/y", "odd@1@2"]:
        assert fdt_path_offset(blob, path) == libfdt.fdt_path_offset(bytearray(blob), path), path


def path_named_blob() -> bytes:
    """Nodes named by full path, as blobs before v16 had them."""
    sw = FdtSw(PAGE_SIZE)
    sw.finish_reservemap()
    for name in ("/", "/n1", "/n1/deep@0"):
        sw.begin_node(name)
        sw.property("start", le64(len(name)))
    sw.begin_node("n2")
    for _ in range(4):
        sw.end_node()
    assert sw.finish() == 0
    return bytes(sw.buf[:sw.totalsize()])


@pytest.mark.parametrize("version", [1, 2, 3, 15, 16, 17])
@pytest.mark.parametrize("kind", ["memblock", "paths", "no-struct-size"])
def test_old_versions_read_as_libfdt_reads_them(version: int, kind: str) -> None:
    """Before v16 node names were full paths and values 8-aligned; before v17 the struct
    size was not in the header (so a wrong one must not matter)."""
    blob = path_named_blob() if kind == "paths" else memblock_vector_blob()
    if kind == "no-struct-size":
        blob = with_word(blob, 36, 0x20)
    blob = with_word(with_word(blob, 20, version), 24, min(version, 16))
    c = bytearray(blob)
    assert fdt_check_header(blob) == libfdt.fdt_check_header(c)
    for o in range(0, 0xD0, 4):
        assert fdt_get_name(blob, o) == libfdt.fdt_get_name(c, o)[0]
        assert list(fdt_next_node(blob, o, 0)) == libfdt.fdt_next_node(c, o, 0)
        for name in ("start", "size", "compatible", "n1", "n2", "deep"):
            assert [*fdt_getprop(blob, o, name)] == libfdt.fdt_getprop(c, o, name)
            assert fdt_subnode_offset(blob, o, name) == libfdt.fdt_subnode_offset(c, o, name)
    for path in ("/", "/n1", "/n2/", "/n1/deep", "/n1/deep/n2"):
        assert fdt_path_offset(blob, path) == libfdt.fdt_path_offset(c, path)


def test_unfinished_writer_buffer_reads_as_libfdt_reads_it() -> None:
    """libfdt can read a sequential-write buffer in progress (string offsets from the end)."""
    sw = FdtSw(512)
    results = []
    for step in (sw.finish_reservemap, lambda: sw.begin_node(""), lambda: sw.property_u32("a", 1),
                 lambda: sw.begin_node("kid"), lambda: sw.property_string("compatible", "k"),
                 sw.end_node):
        assert step() == 0
        buf = bytes(sw.buf)
        c = bytearray(buf)
        results.append(fdt_subnode_offset(buf, 0, "kid"))
        assert results[-1] == libfdt.fdt_subnode_offset(c, 0, "kid")
        for o, name in ((0, "a"), (24, "compatible"), (32, "compatible")):
            assert [*fdt_getprop(buf, o, name)] == libfdt.fdt_getprop(c, o, name)
        assert fdt_node_check_compatible(buf, 24, "k") == libfdt.fdt_node_check_compatible(c, 24, "k")
    assert results[0] == -FDT_ERR_BADSTATE  # nothing in the struct block yet
    assert results[-1] == 24


def nop_out(blob: bytes, start: int, end: int) -> bytes:
    """What fdt_nop_property/fdt_nop_node do: overwrite [start, end) of the struct with NOPs."""
    out = bytearray(blob)
    for off in range(start, end, 4):
        struct.pack_into(">I", out, 0x40 + off, FDT_NOP)
    return bytes(out)


def test_nop_tokens_are_skipped() -> None:
    blob = memblock_vector_blob()
    n1 = fdt_subnode_offset(blob, 0, "n1")
    n2 = fdt_subnode_offset(blob, 0, "n2")
    compat = fdt_first_property_offset(blob, n1)
    start = fdt_next_property_offset(blob, compat)
    size = fdt_next_property_offset(blob, start)
    nopped = nop_out(blob, start, size)  # drop n1's `start`
    assert fdt_getprop(nopped, n1, "start") == (None, -FDT_ERR_NOTFOUND)
    assert fdt_getprop(nopped, n1, "size") == (le64(0x4000000), 8)
    assert fdt_node_check_compatible(nopped, n1, "reserve-mem-v1") == 0
    nopped = nop_out(blob, n1, n2)  # drop the whole n1 node
    assert list(fdt_for_each_subnode(nopped, 0)) == [n2]
    assert fdt_subnode_offset(nopped, 0, "n1") == -FDT_ERR_NOTFOUND
    root = nop_out(ROOT_VECTOR, 8, 28)  # the root's compatible, before preserved-memory-map
    assert fdt_first_property_offset(root, 0) == 28
    assert fdt_node_check_compatible(root, 0, "kho-v1") == -FDT_ERR_NOTFOUND


def test_property_length_overflowing_an_int_ends_the_walk() -> None:
    blob = root_vector_blob()
    prop = fdt_first_property_offset(blob, 0)
    huge = with_word(blob, 0x40 + prop + 4, 0xFFFFFFF8)
    assert fdt_next_tag(huge, prop) == (FDT_END, -FDT_ERR_BADSTRUCTURE)
    assert fdt_getprop(huge, 0, "compatible") == (None, -FDT_ERR_BADSTRUCTURE)
    assert fdt_first_subnode(huge, 0) == -FDT_ERR_NOTFOUND
    assert fdt_next_node(huge, 0, 0) == (-FDT_ERR_BADSTRUCTURE, 0)


# --- property-based: never raise; same as libfdt ---------------------------------------------

NAME_POOL = ["compatible", "patible", "ible", "e", "", "fdt", "t", "start", "art", "size",
             "preserved-memory-map", "map", "reg", "n1", "n1@0", "n@1", "x", "name", "aliases"]
names = st.one_of(st.sampled_from(NAME_POOL),
                  st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12))


@dataclass
class Node:
    name: str
    props: list[tuple[str, str, object]] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)


prop_values = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=24)),
    st.tuples(st.just("string"), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                                         max_size=16)),
    st.tuples(st.just("string"), st.sampled_from(["/", "/n1", "/aliases/e", "/n1@0", "n1"])),  # aliases
    st.tuples(st.just("u32"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("u64"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("placeholder"), st.binary(max_size=24)),
)
props = st.lists(st.builds(lambda n, kv: (n, kv[0], kv[1]), names, prop_values), max_size=4)
trees = st.recursive(
    st.builds(Node, names, props),
    lambda kids: st.builds(Node, names, props, st.lists(kids, max_size=3)),
    max_leaves=12,
)


def tree_ops(root: Node) -> list[tuple]:
    ops: list[tuple] = [("finish_reservemap",)]

    def walk(node: Node, name: str) -> None:
        ops.append(("begin_node", name))
        for pname, kind, value in node.props:
            ops.append((kind, pname, value))
        for child in node.children:
            walk(child, child.name)
        ops.append(("end_node",))

    walk(root, "")
    ops.append(("finish",))
    return ops


any_op = st.one_of(
    st.just(("finish_reservemap",)), st.just(("end_node",)), st.just(("finish",)),
    st.tuples(st.just("add_reservemap_entry"), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("begin_node"), names),
    st.builds(lambda n, kv: (kv[0], n, kv[1]), names, prop_values),
)


def run_ours(bufsize: int, ops: list[tuple]) -> tuple[list[int], bytes]:
    """Apply ``ops``; placeholders get their value only at the end, as KHO fills its own."""
    sw = FdtSw(bufsize)
    codes = [sw.create_err]
    pending: list[tuple[int, bytes]] = []
    for op in ops:
        kind = op[0]
        if kind == "placeholder":
            err, pos = sw.property_placeholder(op[1], len(op[2]))
            if pos is not None:
                pending.append((pos, op[2]))
            codes.append(err)
            continue
        if kind == "finish":
            fill(sw, pending)
        method = {"bytes": "property", "string": "property_string", "u32": "property_u32",
                  "u64": "property_u64"}.get(kind, kind)
        codes.append(getattr(sw, method)(*op[1:]))
    fill(sw, pending)
    return codes, bytes(sw.buf)


def fill(sw: FdtSw, pending: list[tuple[int, bytes]]) -> None:
    for pos, value in pending:
        sw.buf[pos:pos + len(value)] = value
    pending.clear()


def run_libfdt(bufsize: int, ops: list[tuple]) -> tuple[list[int], bytes]:
    buf = bytearray(bufsize)
    codes = [libfdt.fdt_create(buf, bufsize)]
    for op in ops:
        kind, args = op[0], op[1:]
        if kind in ("bytes", "placeholder"):
            codes.append(libfdt.fdt_property_stub(buf, args[0], args[1], len(args[1])))
        else:
            fn = {"string": "property_string", "u32": "property_u32", "u64": "property_u64"}.get(kind, kind)
            codes.append(getattr(libfdt, "fdt_" + fn)(buf, *args))
    return codes, bytes(buf)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.lists(any_op, max_size=4), st.integers(0, 700), st.data())
def test_writer_matches_libfdt(root: Node, extra: list[tuple], bufsize: int, data: st.DataObject) -> None:
    """Any call sequence, well-formed or not, in any buffer size: same codes, same buffer."""
    ops = tree_ops(root)
    for op in extra:  # out-of-place calls exercise the state checks
        ops.insert(data.draw(st.integers(0, len(ops))), op)
    for size in (bufsize, PAGE_SIZE):
        assert run_ours(size, ops) == run_libfdt(size, ops)


def tree_blob(root: Node) -> bytes:
    codes, buf = run_ours(PAGE_SIZE * 4, tree_ops(root))
    assert not any(codes)
    return buf[:fdt_totalsize(buf)]


def mutate(blob: bytes, how: str, data: st.DataObject) -> bytes:
    if how == "nop":  # libfdt's own NOP-ing of a random node or property
        buf = bytearray(blob)
        nodes, (node, depth) = [], libfdt.fdt_next_node(buf, -1, 0)
        while node >= 0:
            nodes.append(node)
            node, depth = libfdt.fdt_next_node(buf, node, depth)
        node = data.draw(st.sampled_from(nodes))
        prop = libfdt.fdt_first_property_offset(buf, node)
        if prop >= 0 and data.draw(st.booleans()):
            assert libfdt.fdt_nop_property(buf, node, data.draw(st.sampled_from(NAME_POOL))) in (0, -1)
        elif node > 0:
            assert libfdt.fdt_nop_node(buf, node) == 0
        return bytes(buf)
    buf = bytearray(blob)
    if how == "header":  # one field, often to a value near a meaningful one
        value = data.draw(st.one_of(st.integers(0, 0x60), st.integers(0, 2**32 - 1), st.sampled_from(
            [0xD00DFEED, 0x2FF20112, len(blob), len(blob) + 1, 0x7FFFFFFF, 0xFFFFFFFF])))
        struct.pack_into(">I", buf, 4 * data.draw(st.integers(0, 9)), value)
        return bytes(buf)
    for _ in range(data.draw(st.integers(1, 6))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    return bytes(buf)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.sampled_from(["clean", "nop", "header", "corrupt"]), st.data())
def test_reader_matches_libfdt(root: Node, how: str, data: st.DataObject) -> None:
    blob = tree_blob(root)
    if how != "clean":
        blob = mutate(blob, how, data)
    mem = blob + bytes(64)  # the blob sits in a page: memory goes on after it
    c = bytearray(mem)
    check = libfdt.fdt_check_header(c)
    assert fdt_check_header(mem) == (check if check or fdt_totalsize(mem) <= len(mem) else -FDT_ERR_TRUNCATED)
    if fdt_totalsize(mem) > len(mem):  # libfdt would read past the memory it was given
        return
    lookups = sorted({*NAME_POOL[:8], *(p[0] for p in root.props), *(k.name for k in root.children)})
    for o in [-4, *range(0, min(len(mem), 0x40 + 4 * 80) - 0x40, 4), 2]:
        assert fdt_get_name(mem, o) == libfdt.fdt_get_name(c, o)[0]
        assert fdt_first_subnode(mem, o) == libfdt.fdt_first_subnode(c, o)
        assert fdt_next_subnode(mem, o) == libfdt.fdt_next_subnode(c, o)
        for depth in (0, 2):
            assert list(fdt_next_node(mem, o, depth)) == libfdt.fdt_next_node(c, o, depth)
        assert fdt_first_property_offset(mem, o) == libfdt.fdt_first_property_offset(c, o)
        assert fdt_next_property_offset(mem, o) == libfdt.fdt_next_property_offset(c, o)
        for name in lookups:
            value, length = fdt_getprop(mem, o, name)
            assert [value, length] == libfdt.fdt_getprop(c, o, name)
            assert fdt_subnode_offset(mem, o, name) == libfdt.fdt_subnode_offset(c, o, name)
            assert fdt_node_check_compatible(mem, o, name) == libfdt.fdt_node_check_compatible(c, o, name)
    paths = ["/", "", "//a/", *(f"/{k.name}/" for k in root.children), *lookups, *(n + "/x" for n in lookups)]
    for path in paths:
        assert fdt_path_offset(mem, path) == libfdt.fdt_path_offset(c, path)


readers = [
    lambda b, o, n: fdt_check_header(b),
    lambda b, o, n: fdt_get_name(b, o),
    lambda b, o, n: fdt_first_subnode(b, o),
    lambda b, o, n: fdt_next_subnode(b, o),
    lambda b, o, n: fdt_next_node(b, o, 0),
    lambda b, o, n: fdt_next_tag(b, o),
    lambda b, o, n: fdt_getprop(b, o, n),
    lambda b, o, n: fdt_node_check_compatible(b, o, n),
    lambda b, o, n: fdt_subnode_offset(b, o, n),
    lambda b, o, n: fdt_path_offset(b, n),
    lambda b, o, n: list(fdt_for_each_subnode(b, o)),
    lambda b, o, n: fdt_next_property_offset(b, o),
]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 trees.map(tree_blob).flatmap(lambda b: st.builds(
                     lambda cut, junk: b[:cut] + junk, st.integers(0, len(b)), st.binary(max_size=8)))),
       st.integers(-8, 300), names)
def test_reader_never_raises(blob: bytes, offset: int, name: str) -> None:
    """Hand-over memory may hold anything: every answer is a value or a libfdt code."""
    for read in readers:
        read(blob, offset, name)
        read(bytes(with_header_magic(blob)), offset, "/" + name)


def with_header_magic(blob: bytes) -> bytearray:
    out = bytearray(blob)
    out[:4] = b"\xd0\x0d\xfe\xed"[:len(out)]
    return out


def test_empty_and_tiny_buffers() -> None:
    for blob in (b"", b"\xd0", b"\xd0\x0d\xfe\xed"):
        assert fdt_check_header(blob) == -FDT_ERR_TRUNCATED
        assert fdt_first_subnode(blob, 0) == -FDT_ERR_NOTFOUND
        assert fdt_getprop(blob, 0, "x")[1] < 0
        assert fdt_next_tag(blob, 0) == (FDT_END, -FDT_ERR_TRUNCATED)
    assert fdt_subnode_offset(b"", 0, "x") == -FDT_ERR_BADMAGIC
    assert fdt_get_name(b"", 0) is None


def test_bad_structure_codes() -> None:
    blob = root_vector_blob()
    bad = with_word(blob, 0x40, 7)  # unknown tag where the root node begins
    assert fdt_first_subnode(bad, 0) == -FDT_ERR_NOTFOUND
    assert fdt_subnode_offset(bad, 0, "memblock") == -FDT_ERR_BADOFFSET
    assert fdt_next_node(bad, -1, 0) == (-FDT_ERR_BADSTRUCTURE, 0)
    assert fdt_check_header(bad) == 0  # the header alone cannot tell
