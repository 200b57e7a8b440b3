"""The README's quick start and library example, run as written."""

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

from test_fs_harness import NO_DEV_MEM

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def block(heading: str, lang: str) -> str:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)[0]


def test_quick_start_hands_the_tree_over(tmp_path: Path) -> None:
    """Everything after set-up (the test's own venv is the set-up's): the in/fdt is the out/fdt."""
    script = block("Quick start (fresh Debian, as root)", "sh")
    setup, rest = script.split("khofs mkimage", 1)
    assert setup.startswith("bash scripts/setup.sh") and "export PATH=$PWD/.venv/bin:$PATH" in setup
    bindir = str(Path(sys.executable).parent)
    r = subprocess.run(["bash", "-euc", "khofs mkimage" + rest], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
                       timeout=120)
    assert (r.returncode, r.stderr) == (0, NO_DEV_MEM), r.stderr
    trees = r.stdout.split("/dts-v1/;")
    assert len(trees) == 3 and 'compatible = "kho-v1";' in trees[1]
    assert trees[1] == trees[2]


def test_library_example_revives_n1() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block("The simulated machine as a library", "python"), "README.md", "exec"), {})
    assert "] Revived memory reservation 'n1' from KHO\n" in out.getvalue()


def test_arm64_block_hands_the_tree_over_in_chosen(tmp_path: Path) -> None:
    """README "arm64": the seed's commands on an arm64 machine; in/fdt is out/fdt, /chosen has both."""
    bindir = str(Path(sys.executable).parent)
    r = subprocess.run(["bash", "-euc", block("arm64", "sh")], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
                       timeout=120)
    assert (r.returncode, r.stderr) == (0, NO_DEV_MEM), r.stderr
    trees = r.stdout.split("/dts-v1/;")
    assert len(trees) == 3 and 'compatible = "kho-v1";' in trees[1]
    assert trees[2].startswith(trees[1])
    assert "linux,kho-fdt\nlinux,kho-scratch\n" in trees[2]
