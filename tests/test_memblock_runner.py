"""`khofs memblock-tests`: the ported suite with upstream main's output (tools/testing/memblock)."""

import re
import subprocess
import sys
from pathlib import Path

KHOFS = [sys.executable, "-m", "khofs.cli", "memblock-tests"]
LINE = re.compile(r"(not )?ok (\d+) : (memblock_[a-z_]+): (?:(top-down|bottom-up): )?([a-z_0-9]+)"
                  r"(?: \(([^)]*)\))?: (passed|failed)")


def test_verbose_prints_one_kselftest_line_per_check_with_the_direction() -> None:
    r = subprocess.run([*KHOFS, "-v"], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stderr) == (0, "")
    lines = r.stdout.splitlines()
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m][:3]
    assert [int(m[2]) for m in parsed] == list(range(1, len(lines) + 1))
    assert {m[7] for m in parsed} == {"passed"} and not any(m[1] for m in parsed)
    checks = {(m[3], m[4], m[5]) for m in parsed}
    assert ("memblock_alloc", "top-down", "alloc_simple") in checks
    assert ("memblock_alloc_raw", "bottom-up", "alloc_simple") in checks
    assert ("memblock_alloc_try_nid", "bottom-up", "numa_simple") in checks
    assert ("memblock_alloc_exact_nid_raw", "top-down", "exact_nid_simple") in checks
    assert ("memblock_add", None, "add_simple") in checks
    # Each NUMA check once, HOTPLUG nodes (no -m); both directions of every directed check.
    numa = [m for m in parsed if m[5] == "numa_simple"]
    assert len(numa) == 4
    directed = {(m[3], m[5], m[6]): set() for m in parsed if m[4]}
    for m in parsed:
        if m[4]:
            directed[(m[3], m[5], m[6])].add(m[4])
    assert all(d == {"top-down", "bottom-up"} for d in directed.values())


def test_quiet_when_everything_passes() -> None:
    r = subprocess.run(KHOFS, capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


CHECK = '''
import pytest

@pytest.mark.parametrize("direction", ["top_down", "bottom_up"])
@pytest.mark.parametrize("movable_node", [False, True], ids=["hotplug", "movable_node"])
def test_numa_mode(direction, movable_node):
    assert not movable_node, "nodes are not HOTPLUG"
'''


def test_movable_node_mode_and_a_failing_check(tmp_path: Path) -> None:
    """-m runs the movable_node variant instead of the HOTPLUG one; a failure is `not ok` and status 1."""
    (tmp_path / "test_numa_mode.py").write_text(CHECK)
    script = ("import sys; from khofs.memblock_tests import run; "
              "sys.exit(run(verbose={}, movable_node={}, paths=['test_numa_mode.py']))")
    r = subprocess.run([sys.executable, "-c", script.format(True, False)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert (r.returncode, r.stdout) == (0, "ok 1 : memblock_numa_mode: top-down: numa_mode: passed\n"
                                           "ok 2 : memblock_numa_mode: bottom-up: numa_mode: passed\n")
    r = subprocess.run([sys.executable, "-c", script.format(True, True)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert (r.returncode, r.stdout) == (1, "not ok 1 : memblock_numa_mode: top-down: numa_mode: failed\n"
                                           "not ok 2 : memblock_numa_mode: bottom-up: numa_mode: failed\n")
    r = subprocess.run([sys.executable, "-c", script.format(False, True)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 1
    assert r.stdout.startswith("khofs memblock-tests: memblock_numa_mode: top-down: numa_mode: "
                               "test_numa_mode.py:7: AssertionError: nodes are not HOTPLUG\n")
