"""sim.lib.fdt_rw against libfdt itself (pylibfdt): the same edits give the same bytes and return codes.

Random sequences of the calls drivers/of/kexec.c makes — setprop, appendprop,
appendprop_addrrange, delprop, add_subnode, add/del_mem_rsv — on a QEMU virt tree opened
into a buffer with little room, so that -FDT_ERR_NOSPACE and -FDT_ERR_NOTFOUND paths are
taken too; after every call the whole buffer must equal libfdt's, and after fdt_pack the blob.
"""

import libfdt
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.lib import fdt_rw
from sim.machine import Machine

BASE = Machine(arch="arm64", mem="1G", nodes=2, cmdline="console=ttyAMA0").board.dtb((0x48000000, 0x48001000))
NAMES = ("bootargs", "linux,kho-fdt", "rng-seed", "compatible", "x", "gs", "linux,initrd-start", "new-prop")
PATHS = ("/", "/chosen", "/cpus/cpu@0", "/memory@40000000")

op = st.one_of(
    st.tuples(st.just("setprop"), st.sampled_from(PATHS), st.sampled_from(NAMES), st.binary(max_size=40)),
    st.tuples(st.just("appendprop"), st.sampled_from(PATHS), st.sampled_from(NAMES), st.binary(max_size=24)),
    st.tuples(st.just("addrrange"), st.sampled_from(PATHS), st.sampled_from(NAMES),
              st.tuples(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1))),
    st.tuples(st.just("delprop"), st.sampled_from(PATHS), st.sampled_from(NAMES), st.none()),
    st.tuples(st.just("subnode"), st.sampled_from(PATHS), st.sampled_from(("chosen", "kid", "a@1")),
              st.none()),
    st.tuples(st.just("add_rsv"), st.none(), st.none(),
              st.tuples(st.integers(0, 1 << 40), st.integers(1, 1 << 30))),
    st.tuples(st.just("del_rsv"), st.none(), st.none(), st.integers(0, 3)),
)


# Each call as (libfdt's, ours): (buffer, node, name, argument) -> return code.
CALLS = {
    "setprop": (lambda b, n, name, v: libfdt.fdt_setprop(b, n, name, v, len(v)),
                lambda b, n, name, v: fdt_rw.fdt_setprop(b, n, name, v)),
    "appendprop": (lambda b, n, name, v: libfdt.fdt_appendprop(b, n, name, v, len(v)),
                   lambda b, n, name, v: fdt_rw.fdt_appendprop(b, n, name, v)),
    "addrrange": (lambda b, n, name, v: libfdt.fdt_appendprop_addrrange(b, 0, n, name, *v),
                  lambda b, n, name, v: fdt_rw.fdt_appendprop_addrrange(b, 0, n, name, *v)),
    "delprop": (lambda b, n, name, _v: libfdt.fdt_delprop(b, n, name),
                lambda b, n, name, _v: fdt_rw.fdt_delprop(b, n, name)),
    "subnode": (lambda b, n, name, _v: libfdt.fdt_add_subnode(b, n, name),
                lambda b, n, name, _v: fdt_rw.fdt_add_subnode(b, n, name)),
    "add_rsv": (lambda b, _n, _name, v: libfdt.fdt_add_mem_rsv(b, *v),
                lambda b, _n, _name, v: fdt_rw.fdt_add_mem_rsv(b, *v)),
    "del_rsv": (lambda b, _n, _name, v: libfdt.fdt_del_mem_rsv(b, v),
                lambda b, _n, _name, v: fdt_rw.fdt_del_mem_rsv(b, v)),
}


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 160), st.lists(op, max_size=12))
def test_edits_match_libfdt(room: int, ops: list[tuple[str, str | None, str | None, object]]) -> None:
    size = len(BASE) + room
    err, ours = fdt_rw.fdt_open_into(BASE, size)
    theirs = bytearray(size)
    assert (err, libfdt.fdt_open_into(bytearray(BASE), theirs, size)) == (0, 0)
    assert ours == theirs
    for kind, path, name, arg in ops:
        if path is not None and libfdt.fdt_path_offset(theirs, path) < 0:
            continue                         # a node a failed call never created
        theirs_call, ours_call = CALLS[kind]
        node = libfdt.fdt_path_offset(theirs, path) if path else 0
        expected = theirs_call(theirs, node, name, arg)
        assert ours_call(ours, node, name, arg) == expected, (kind, path, name)
        assert ours == theirs, (kind, path, name)
    assert fdt_rw.fdt_pack(ours) == libfdt.fdt_pack(theirs) == 0
    assert bytes(ours) == bytes(theirs[:libfdt.fdt_totalsize(theirs)])


def test_open_into_too_small_is_nospace() -> None:
    err, _ = fdt_rw.fdt_open_into(BASE, len(BASE) - 1)
    assert err == -libfdt.NOSPACE
