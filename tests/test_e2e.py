"""The whole KHO workflow through `khofs run`, at the real absolute paths, in a real bash."""

import re
import subprocess
import sys
from pathlib import Path

from test_fs_harness import KHO_CMDLINE, REPO, host_binds

WORKFLOW = REPO / "scripts" / "kho-workflow.sh"


def test_the_demo_workflow_in_a_private_namespace(tmp_path: Path) -> None:
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
                            "KHOFS_MEMMAP_SVG": str(svg)})
    libfuse_noise = "Ignoring invalid max threads value 4294967295 > max (100000).\n"   # libfuse#1003
    assert (r.returncode, r.stderr.replace(libfuse_noise, "")) == (0, ""), r.stderr
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


def test_run_keeps_the_working_directory(tmp_path: Path) -> None:
    """CMD starts where `khofs run` was started (libfuse3's fuse_main chdirs the server to /)."""
    r = subprocess.run([sys.executable, "-m", "khofs.cli", "run", "--", "pwd"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout) == (0, f"{tmp_path}\n"), r.stderr


def test_run_exit_status_and_errors_are_one_line(tmp_path: Path) -> None:
    khofs = [sys.executable, "-m", "khofs.cli"]
    r = subprocess.run([*khofs, "run", "--", "bash", "-c", "exit 7"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 7
    r = subprocess.run([*khofs, "run", "--mem", "banana", "--", "true"], capture_output=True, text=True)
    assert (r.returncode, r.stderr.count("\n"), "Traceback" in r.stderr) == (1, 1, False)
    r = subprocess.run([*khofs, "mount", str(tmp_path / "missing")], capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (1, f"khofs: cannot mount {tmp_path}/missing: not a directory\n")
