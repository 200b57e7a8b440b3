"""scripts/fuzz_handover.py and scripts/soak.py as CI runs them (issue 8 item 3): a few hundred
corrupted hand-overs and a 20-generation chain, through their command lines."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("version", "cases", "seed"), [("6.16", 300, 7000), ("6.18", 300, 9000)])
def test_fuzzed_handovers_never_crash_hang_or_lose_silently(version: str, cases: int, seed: int) -> None:
    r = _run(str(SCRIPTS / "fuzz_handover.py"), "--cases", str(cases), "--seed", str(seed),
             "--version", version)
    assert r.returncode == 0, r.stdout + r.stderr
    counts = dict(zip(*[iter(r.stdout.splitlines()[-1].split())] * 2, strict=True))
    assert {k: int(v) for k, v in counts.items() if k in ("crash", "hang", "loss")} == \
        {"crash": 0, "hang": 0, "loss": 0}
    # The corruptions reach both outcomes a user sees: revival and a logged fallback.
    assert int(counts["intact"]) > 0 and int(counts["fallback"]) > 0
    assert sum(int(v) for v in counts.values()) == cases


@pytest.mark.parametrize("version", ["6.16", "6.18"])
def test_soak_keeps_every_byte_for_20_generations(version: str) -> None:
    r = _run(str(SCRIPTS / "soak.py"), "--generations", "20", "--seed", "3", "--version", version)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "20 generations" in r.stdout and "0 lost silently" in r.stdout


def test_fuzz_reports_and_fails_on_a_crash() -> None:
    """The exit status is what CI relies on: a failing case prints its seed and exits 1."""
    probe = ("import runpy, sys\n"
             "sys.argv = ['fuzz_handover.py', '--cases', '3', '--seed', '5']\n"
             "import sim.init.main\n"
             "def boom(self): raise ValueError('planted')\n"
             "sim.init.main.Kernel.sparse_init = boom\n"
             f"runpy.run_path({str(SCRIPTS / 'fuzz_handover.py')!r}, run_name='__main__')\n")
    r = _run("-c", probe)
    assert r.returncode == 1
    assert "crash seed=5: ValueError: planted" in r.stdout


@pytest.mark.parametrize(("seed", "version"), [
    (105437, "6.16"),   # e820 and scratch both corrupt: the scrub of scratch ran past RAM
    (104101, "6.18"),   # a kho_vmalloc order that read far past RAM
    (100774, "6.18"),   # an order-0 bitmap of 0xaa: 16k failing reservations, each a full search
    (104293, "6.18"),   # the same with an order-3 bitmap
])
def test_seeds_the_long_run_found(seed: int, version: str) -> None:
    r = _run(str(SCRIPTS / "fuzz_handover.py"), "--cases", "1", "--seed", str(seed), "--version", version)
    assert r.returncode == 0, r.stdout + r.stderr
