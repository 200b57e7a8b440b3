"""sim.fs.debugfs: the tree the kernel registers into and the errnos a process gets from it."""

import errno
import stat

import pytest

from sim.fs.debugfs import Debugfs


@pytest.fixture
def tree() -> Debugfs:
    d = Debugfs()
    kho = d.debugfs_create_dir("kho")
    state = {"v": 0}
    d.debugfs_create_attr("finalize", 0o600, kho, lambda: state["v"], lambda v: state.update(v=v))
    d.debugfs_create_attr("ro", 0o400, kho, lambda: 7, None)
    d.debugfs_create_blob("fdt", 0o400, kho, lambda: b"\xd0\x0d\xfe\xed")
    d.debugfs_create_seq("scratch_len", 0o400, kho, lambda: "0x1000\n")
    return d


def err(fn, *args) -> int:
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def test_root_is_0700_and_files_report_size_zero(tree: Debugfs) -> None:
    assert tree.stat("").st_mode == stat.S_IFDIR | 0o700
    assert tree.stat("kho").st_mode == stat.S_IFDIR | 0o755
    st = tree.stat("kho/fdt")
    assert (st.st_mode, st.st_size, st.st_uid) == (stat.S_IFREG | 0o400, 0, 0)
    assert tree.listdir("kho") == ["finalize", "ro", "fdt", "scratch_len"]


def test_attribute_reads_llu_and_parses_like_simple_attr_write(tree: Debugfs) -> None:
    assert tree.write("kho/finalize", b"0x10\n") == 5
    assert tree.read("kho/finalize") == b"16\n"
    # Only the first 23 bytes are parsed; a NUL ends the string.
    assert tree.write("kho/finalize", b"3\0garbage") == 9
    assert tree.read("kho/finalize") == b"3\n"
    assert err(tree.write, "kho/finalize", b"1 2") == errno.EINVAL
    assert err(tree.write, "kho/finalize", b"9" * 23 + b"x") == errno.ERANGE


def test_errnos(tree: Debugfs) -> None:
    assert err(tree.read, "kho/missing") == errno.ENOENT
    assert err(tree.read, "kho") == errno.EISDIR
    assert err(tree.listdir, "kho/fdt") == errno.ENOTDIR
    assert err(tree.stat, "kho/fdt/x") == errno.ENOTDIR
    assert err(tree.write, "kho/fdt", b"1") == errno.EINVAL          # no ->write
    assert err(tree.write, "kho/scratch_len", b"1") == errno.EINVAL
    assert err(tree.write, "kho/ro", b"1") == errno.EACCES            # attribute without a setter


def test_remove_takes_the_file_away(tree: Debugfs) -> None:
    tree.debugfs_remove(tree.lookup("kho/fdt"))
    assert not tree.exists("kho/fdt")
    with pytest.raises(OSError) as e:
        tree.debugfs_create_dir("kho")
    assert e.value.errno == errno.EEXIST
