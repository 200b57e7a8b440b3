"""The outgoing side of KHO (issue 3 item 5): finalize/abort, the FDTs, the wire format in RAM."""

import errno
import struct
import subprocess

import pytest
from kho_common import (
    arch,  # noqa: F401 - the fixture every test here runs under
    machine,
    preserved_blocks,
)
from spec_vectors import MEMBLOCK_VECTOR

from sim.kernel.kexec_handover import KEXEC_KHO_FINALIZE, NOTIFY_BAD, NOTIFY_DONE, notifier_from_errno
from sim.lib import fdt as libfdt
from sim.sizes import PAGE_SIZE

pytestmark = pytest.mark.usefixtures("arch")

M = 1 << 20
CMDLINE = "kho=on kho_scratch=16M,512M,256M reserve_mem=64m:4k:n1"


def boot(cmdline: str = CMDLINE, **kw):
    return machine(mem="8G", nodes=2, cmdline=cmdline, **kw).boot()


def finalize(k, value: bytes = b"1\n") -> None:
    k.debugfs.write("kho/out/finalize", value)


def errno_of(k, value: bytes) -> int:
    with pytest.raises(OSError) as e:
        finalize(k, value)
    return e.value.errno


def root_pmm(k) -> int:
    blob = k.debugfs.read("kho/out/fdt")
    value, length = libfdt.fdt_getprop(blob, 0, "preserved-memory-map")
    assert length == 8
    return struct.unpack("<Q", value)[0]


def test_debugfs_layout_before_finalize() -> None:
    k = boot()
    assert k.debugfs.listdir("kho") == ["out"]
    assert k.debugfs.listdir("kho/out") == ["sub_fdts", "scratch_phys", "scratch_len", "finalize"]
    assert k.debugfs.listdir("kho/out/sub_fdts") == []
    modes = {p: k.debugfs.stat(f"kho/out/{p}").st_mode & 0o777 for p in k.debugfs.listdir("kho/out")}
    assert modes == {"sub_fdts": 0o755, "scratch_phys": 0o400, "scratch_len": 0o400, "finalize": 0o600}
    assert all(k.debugfs.stat(f"kho/out/{p}").st_size == 0 for p in ("finalize", "scratch_len"))
    assert k.debugfs.read("kho/out/finalize") == b"0\n"


def test_finalize_state_table() -> None:
    k = boot()
    assert errno_of(k, b"0") == errno.ENOENT
    assert errno_of(k, b"abc") == errno.EINVAL
    assert errno_of(k, b"-1") == errno.EINVAL
    assert errno_of(k, b"18446744073709551616") == errno.ERANGE
    assert not k.debugfs.exists("kho/out/fdt")
    finalize(k, b"1\0")                      # what the kernel selftest writes
    assert k.debugfs.read("kho/out/finalize") == b"1\n"
    assert k.debugfs.exists("kho/out/fdt") and k.debugfs.exists("kho/out/sub_fdts/memblock")
    assert k.debugfs.stat("kho/out/fdt").st_mode & 0o777 == 0o400
    for value in (b"1", b"2\n", b"0x1"):
        assert errno_of(k, value) == errno.EEXIST
    finalize(k, b"0x0")                      # abort
    assert k.debugfs.read("kho/out/finalize") == b"0\n"
    assert not k.debugfs.exists("kho/out/fdt")
    assert k.debugfs.listdir("kho/out/sub_fdts") == []
    assert errno_of(k, b"0\n") == errno.ENOENT
    finalize(k, b"010")                      # octal 8: still "non-zero"
    assert k.debugfs.exists("kho/out/fdt")


def test_blob_reads_return_totalsize_bytes_and_dtc_decompiles_them(tmp_path) -> None:
    k = boot()
    finalize(k)
    root = k.debugfs.read("kho/out/fdt")
    sub = k.debugfs.read("kho/out/sub_fdts/memblock")
    assert len(root) == libfdt.fdt_totalsize(root) and libfdt.fdt_check_header(root) == 0
    n1_start, n1_size = k.reserve_mem.reserve_mem_find_by_name("n1")
    memblock_phys = k.reserve_mem.kho_fdt.phys
    pmm = root_pmm(k)
    (tmp_path / "root.dtb").write_bytes(root)
    (tmp_path / "memblock.dtb").write_bytes(sub)

    def cells(v: int) -> str:                  # dtc shows a LE u64 as two BE cells
        lo, hi = struct.unpack(">II", struct.pack("<Q", v))
        return f"<{lo:#04x} {hi:#04x}>"

    dts = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(tmp_path / "root.dtb")],
                         capture_output=True, text=True, check=True).stdout
    assert dts == ("/dts-v1/;\n\n/ {\n\tcompatible = \"kho-v1\";\n"
                   f"\tpreserved-memory-map = {cells(pmm)};\n\n"
                   f"\tmemblock {{\n\t\tfdt = {cells(memblock_phys)};\n\t}};\n}};\n")
    dts = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(tmp_path / "memblock.dtb")],
                         capture_output=True, text=True, check=True).stdout
    assert "\tcompatible = \"memblock-v1\";\n" in dts
    assert f"\t\tstart = {cells(n1_start)};\n" in dts
    assert f"\t\tsize = {cells(n1_size)};\n" in dts


def test_root_fdt_is_libfdt_sequential_writer_output() -> None:
    """The root FDT page equals an independent fdt_sw build with the same values."""
    k = boot()
    finalize(k)
    root = k.debugfs.read("kho/out/fdt")
    sw = libfdt.FdtSw(PAGE_SIZE)
    sw.finish_reservemap()
    sw.begin_node("")
    sw.property_string("compatible", "kho-v1")
    sw.property("preserved-memory-map", struct.pack("<Q", root_pmm(k)))
    sw.begin_node("memblock")
    sw.property("fdt", struct.pack("<Q", k.reserve_mem.kho_fdt.phys))
    sw.end_node()
    sw.end_node()
    assert sw.finish() == 0
    assert root == bytes(sw.buf[:sw.totalsize()])
    # Strings in reverse order of first use, as the spec's test vector shows.
    assert root.endswith(b"fdt\0preserved-memory-map\0compatible\0")


def test_memblock_sub_fdt_matches_the_spec_vector() -> None:
    """Spec §3's bytes, produced by the kernel's own prepare_kho_fdt for that table."""
    k = boot("kho=on")
    rm = k.reserve_mem
    rm.reserved_mem_add(0x46BC00000, 0x4000000, "n1")
    rm.reserved_mem_add(0x467C00000, 0x4000000, "n2")
    assert rm.prepare_kho_fdt() == 0
    blob = k.physmem.read(rm.kho_fdt.phys, 0x11E)
    assert blob == MEMBLOCK_VECTOR


def test_chunk_list_covers_exactly_the_preserved_ranges() -> None:
    k = boot()
    finalize(k)
    blocks = [(p, PAGE_SIZE << order) for p, order in preserved_blocks(k.physmem, root_pmm(k), 4096)]
    covered = sorted(blocks)
    n1_start, n1_size = k.reserve_mem.reserve_mem_find_by_name("n1")
    expected = sorted([(k.kho.ser.fdt.phys, PAGE_SIZE), (k.reserve_mem.kho_fdt.phys, PAGE_SIZE)])
    pages = [b for b in covered if b[1] == PAGE_SIZE and b[0] in {p for p, _ in expected}]
    assert pages == expected
    rest = [b for b in covered if b not in expected]
    # The n1 blocks tile [start, start + size) exactly, without gaps or overlap.
    cur = n1_start
    for phys, size in sorted(rest):
        assert phys == cur and phys % size == 0
        cur += size
    assert cur == n1_start + n1_size


def test_chunks_hold_at_most_255_bitmaps_per_order_ascending() -> None:
    """500 scattered order-0 folios: two chunks for order 0, orders ascending (spec §4.2)."""
    k = boot("kho=on")
    kho = k.kho
    for i in range(500):
        folio_pfn = (0x100000000 >> 12) + i * 4096          # one per 16 MiB bitmap
        kho.kho_preserve_phys(folio_pfn << 12, PAGE_SIZE)
    kho.kho_preserve_phys(0x140000000, 2 * M)                # one order-9 block
    finalize(k)
    orders, nums = [], []
    chunk = root_pmm(k)
    while chunk:
        nxt, order, num = struct.unpack("<QII", k.physmem.read(chunk, 16))
        orders.append(order)
        nums.append(num)
        chunk = nxt
    # 500 bitmaps (plus the root page's, unless it shares one) for order 0 -> 255 + rest; then order 9.
    order0 = len(k.kho.ser.track[0])
    assert order0 in (500, 501)
    assert orders == [0, 0, 9] and nums == [255, order0 - 255, 1]


def test_preserve_phys_worked_example_bitmaps() -> None:
    """Spec §4.1's n1/n2 example: the greedy split and the exact bitmap bits."""
    k = machine(mem="18G", nodes=1, cmdline="kho=on").boot()
    kho = k.kho
    assert kho.kho_preserve_phys(0x46BC00000, 0x4000000) == 0
    assert kho.kho_preserve_phys(0x467C00000, 0x4000000) == 0
    bits = {}
    for order, bitmaps in kho.ser.track.items():
        for index, phys in bitmaps.items():
            value = int.from_bytes(k.physmem.read(phys, 512), "little")
            bits[(order, index)] = sorted(b for b in range(4096) if value >> b & 1)
    assert bits == {(10, 1): [0x19F, 0x1AE, 0x1AF, 0x1BE], (11, 0): [0x8D6, 0x8DE],
                    (12, 0): [0x46A, 0x46E], (13, 0): [0x234, 0x236]}


def test_preserve_phys_errors() -> None:
    k = boot("kho=on")
    assert k.kho.kho_preserve_phys(0x100000800, PAGE_SIZE) == -errno.EINVAL
    assert k.kho.kho_preserve_phys(0x100000000, 100) == -errno.EINVAL
    finalize(k)
    assert k.kho.kho_preserve_phys(0x100000000, PAGE_SIZE) == -errno.EBUSY
    # A 1 GiB-aligned GiB is a single order-18 bit: orders above MAX_PAGE_ORDER occur.
    finalize(k, b"0")
    assert k.kho.kho_preserve_phys(0x100000000, 1 << 30) == 0
    assert list(k.kho.ser.track) == [18]


def test_abort_forgets_every_preservation() -> None:
    k = boot(test_kho=True)
    data_folios = {f.phys for f in k.test_kho.folios}
    finalize(k)
    before = {p for p, _ in preserved_blocks(k.physmem, root_pmm(k), 4096)}
    assert data_folios <= before
    finalize(k, b"0")
    assert k.kho.ser.track == {}
    finalize(k)
    after = {p for p, _ in preserved_blocks(k.physmem, root_pmm(k), 4096)}
    # Re-finalize re-runs the notifiers: test_kho re-preserves only its FDT folio.
    assert not data_folios & after
    assert k.test_kho.fdt.phys in after
    assert k.debugfs.listdir("kho/out/sub_fdts") == ["kho_test", "memblock"]


def test_failed_finalize_returns_the_notifier_errno_and_leaves_sub_fdts() -> None:
    k = boot()
    k.kho.register_kho_notifier(lambda cmd, ser: NOTIFY_BAD if cmd == KEXEC_KHO_FINALIZE else NOTIFY_DONE)
    assert errno_of(k, b"1") == errno.EPERM
    assert "KHO: Failed to convert KHO state tree: -1" in k.dmesg()
    assert k.debugfs.read("kho/out/finalize") == b"0\n"
    assert not k.debugfs.exists("kho/out/fdt")
    assert k.debugfs.listdir("kho/out/sub_fdts") == ["memblock"]      # quirk: left behind
    assert k.kho.ser.track == {}


def flood_root_fdt(k, report) -> None:
    """A FINALIZE notifier adding subtrees until the one-page root FDT is full."""
    def notifier(cmd: int, ser) -> int:
        if cmd != KEXEC_KHO_FINALIZE:
            return NOTIFY_DONE
        err = 0
        for i in range(300):
            err = k.kho.kho_add_subtree(ser, f"subtree-with-a-long-name-{i}", 0x100000000)
            if err:
                break
        return report(err)
    k.kho.register_kho_notifier(notifier)


def test_root_fdt_overflow_is_an_ored_libfdt_code_seen_as_esrch() -> None:
    # test_kho-style notifiers turn any error into NOTIFY_BAD: EPERM.
    k = boot("kho=on")
    flood_root_fdt(k, lambda err: NOTIFY_BAD if err else NOTIFY_DONE)
    assert errno_of(k, b"1") == errno.EPERM
    # One passing the libfdt code through notifier_from_errno surfaces -FDT_ERR_NOSPACE (-3) as ESRCH.
    k = boot("kho=on")
    flood_root_fdt(k, notifier_from_errno)
    assert errno_of(k, b"1") == errno.ESRCH
    assert "KHO: Failed to convert KHO state tree: -3" in k.dmesg()


def test_kho_scratch_shows_the_array_in_ram() -> None:
    k = boot()
    raw = k.physmem.read(k.kho.kho_scratch_phys, 4 * 16)
    pairs = [struct.unpack_from("<QQ", raw, 16 * i) for i in range(4)]
    assert k.debugfs.read("kho/out/scratch_phys") == "".join(f"0x{a:x}\n" for a, _ in pairs).encode()
    assert k.debugfs.read("kho/out/scratch_len") == "".join(f"0x{s:x}\n" for _, s in pairs).encode()


def test_test_kho_publishes_its_sub_fdt_first() -> None:
    k = boot(test_kho=True)
    finalize(k)
    root = k.debugfs.read("kho/out/fdt")
    names = [libfdt.fdt_get_name(root, o) for o in libfdt.fdt_for_each_subnode(root, 0)]
    assert names == ["kho_test", "memblock"]
    sub = k.debugfs.read("kho/out/sub_fdts/kho_test")
    node = libfdt.fdt_path_offset(sub, "/data")
    nr, _ = libfdt.fdt_getprop(sub, node, "nr_folios")
    info, length = libfdt.fdt_getprop(sub, node, "folios_info")
    n = struct.unpack("<I", nr)[0]
    assert length == 8 * n == 8 * len(k.test_kho.folios)
    assert [v & ~0xFFF for (v,) in struct.iter_unpack("<Q", info)] == [f.phys for f in k.test_kho.folios]
    # max_mem defaults to 8 MiB and is filled exactly.
    assert sum(f.size for f in k.test_kho.folios) == 8 * M


def test_test_kho_max_mem_module_parameter() -> None:
    k = boot("kho=on test_kho.max_mem=1048576", test_kho=True)
    assert sum(f.size for f in k.test_kho.folios) == M
    # A long module parameter takes no memparse suffix.
    k = boot("kho=on test_kho.max_mem=1M", test_kho=True)
    assert "Booting kernel: `1M' invalid for parameter `test_kho.max_mem'" in k.dmesg()
    assert sum(f.size for f in k.test_kho.folios) == 8 * M


def test_registering_a_notifier_twice_warns_and_fails_with_eexist() -> None:
    # notifier_chain_register(): the same notifier_block again is WARN(1, ...) and -EEXIST, and
    # the chain keeps one copy, so FINALIZE calls it once.
    k = boot("kho=on")
    calls = []

    def kho_user_notifier(cmd: int, ser) -> int:
        calls.append(cmd)
        return NOTIFY_DONE

    assert k.kho.register_kho_notifier(kho_user_notifier) == 0
    before = len(k.printk.records)
    assert k.kho.register_kho_notifier(kho_user_notifier) == -errno.EEXIST
    assert [r.text for r in k.printk.records[before:]] == [
        "------------[ cut here ]------------",
        "notifier callback kho_user_notifier already registered",
        "WARNING: CPU: 0 PID: 1 at kernel/notifier.c:28 notifier_chain_register+0x0/0x0",
        "[khofs: registers and call trace not simulated]",
        "---[ end trace 0000000000000000 ]---",
    ]
    finalize(k)
    assert calls == [KEXEC_KHO_FINALIZE]
