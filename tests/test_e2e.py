"""The whole KHO workflow through `khofs run`, at the real absolute paths, in a real bash."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_fs_harness import KHO_CMDLINE, NO_DEV_MEM, REPO, host_binds

WORKFLOW = REPO / "scripts" / "kho-workflow.sh"


# Both libfuse generations, each in its own `khofs run` process (mfusepy picks by this name).
LIBFUSE = pytest.mark.parametrize("libfuse", ["fuse", "fuse3"])


@LIBFUSE
def test_the_demo_workflow_in_a_private_namespace(tmp_path: Path, libfuse: str) -> None:
    """The README's demo script with the Python kexec clone, on a scrubbing machine: only truly
    preserved memory survives (tests/test_intercept.py runs it with the real kexec-tools)."""
    before = host_binds()
    bindir = str(Path(sys.executable).parent)          # where `khofs` is installed
    svg = tmp_path / "memmap.svg"
    r = subprocess.run([sys.executable, "-m", "khofs.cli", "run", "--kexec", "clone", "--scrub", "--test-kho",
                        "--kho-sanitizer",
                        "--cmdline", KHO_CMDLINE, "--", "bash", str(WORKFLOW)],
                       capture_output=True, text=True, timeout=300,
                       env={"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO),
                            "KHOFS_MEMMAP_SVG": str(svg), "FUSE_LIBRARY_NAME": libfuse})
    assert (r.returncode, r.stderr) == (0, NO_DEV_MEM), r.stderr
    out = r.stdout
    # reserve_mem puts n1 right below node 1's memmap (see tests/test_boot.py for the arithmetic).
    assert "n1 at 0x278000000, 64 MiB\n" in out
    assert "n1 holds the same 64 MiB: the memory survived the kexec\n" in out
    assert "] Revived memory reservation 'n1' from KHO\n" in out
    assert "] test_kho: KHO restore succeeded\n" in out
    # The kexec'd kernel's in/fdt decompiles to the tree the old kernel's out/fdt showed;
    # khofs decode shows that tree with its u64s as addresses and the sub-FDTs followed.
    trees = re.findall(r"^/dts-v1/;\n\n/ \{\n.*?^\};\n", out, re.M | re.S)
    dtc = [t for t in trees if "/bits/ 64" not in t]
    assert len(trees) == 3 and dtc[0] == dtc[1], "in/fdt differs from out/fdt"
    assert "\t\t\t\tstart = /bits/ 64 <0x278000000>;\t// u64 LE\n" in trees[1]
    assert "\n0x0000000278000000-0x000000027bffffff  64 MiB\n" in out          # a preserved range, merged
    assert "\n0 findings\n" in out
    assert "# previous kernel (from the hand-over)" in out and "\n# this kernel" in out
    assert "  0x0000000278000000-0x000000027bffffff      64 MiB  reserve_mem n1\n" in out
    assert svg.read_text().startswith("<svg")
    assert host_binds() == before


@LIBFUSE
def test_run_keeps_the_working_directory_and_is_quiet(tmp_path: Path, libfuse: str) -> None:
    """CMD starts where `khofs run` was started (libfuse3's fuse_main chdirs the server to /), and
    libfuse3 3.14 does not complain about its own max_idle_threads default."""
    r = subprocess.run([sys.executable, "-m", "khofs.cli", "run", "--mem", "1G", "--", "pwd"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "FUSE_LIBRARY_NAME": libfuse})
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{tmp_path}\n", NO_DEV_MEM)


def test_run_exit_status_and_errors_are_one_line(tmp_path: Path) -> None:
    khofs = [sys.executable, "-m", "khofs.cli"]
    r = subprocess.run([*khofs, "run", "--", "bash", "-c", "exit 7"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 7
    r = subprocess.run([*khofs, "run", "--mem", "banana", "--", "true"], capture_output=True, text=True)
    assert (r.returncode, r.stderr.count("\n"), "Traceback" in r.stderr) == (1, 1, False)
    r = subprocess.run([*khofs, "mount", str(tmp_path / "missing")], capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (1, f"khofs: cannot mount {tmp_path}/missing: not a directory\n")
