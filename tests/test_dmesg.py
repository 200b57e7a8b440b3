"""The `dmesg` shim against a real mount, side by side with util-linux's dmesg (`dmesg -F FILE`)."""

import json
import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_fs_harness import mounted

LOUD = '''
from sim.kexec_handover import module_init

@module_init
def loud_init(kernel):
    kernel.pr_err('loud: "quoted" \\\\ back, caf\\u00e9, tab\\there')
    kernel.debugfs_create_attr("loud", 0o200, None, lambda: 0, lambda v: kernel.pr_warn(f"loud: {v}"))
'''
CMDLINE = "kho=on kho_scratch=1G"                  # a warning: "Malformed early option 'kho_scratch'"
# Where a follow test gives up waiting for a line (a bound against hanging, not a timing assertion).
_GIVE_UP_S = 60


@pytest.fixture
def machine(tmp_path: Path):
    (tmp_path / "loud.py").write_text(LOUD)
    with mounted(tmp_path, CMDLINE, modules=[tmp_path / "loud.py"]) as (m, mnt):
        yield m, mnt


def shim(mnt: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "khofs.dmesg", *args], capture_output=True, text=True,
                          env={**os.environ, "KHOFS_ROOT": str(mnt)}, timeout=60)


def util_linux(log: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dmesg", "-F", str(log), *args], capture_output=True, text=True, timeout=60)


def syslog_file(m, path: Path) -> Path:
    """The kernel's records as a syslog(2) buffer (`<level>[time] text`), util-linux's -F input."""
    lines = [f"<{r.level}>[{r.ts_nsec // 10**9:5d}.{r.ts_nsec % 10**9 // 1000:06d}] {r.text}\n"
             for r in m.kernel.printk.records if not r.pr_debug]
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("args", [[], ["-x"], ["-l", "err,warn"], ["--level=3"], ["-r"], ["-t"],
                                  ["-x", "-t", "-l", "notice"], ["-l", "err", "-l", "warn", "--decode"]],
                         ids=repr)
def test_output_is_util_linux_dmesg(machine, tmp_path: Path, args: list[str]) -> None:
    m, mnt = machine
    log = syslog_file(m, tmp_path / "syslog")
    ours, theirs = shim(mnt, *args), util_linux(log, *args)
    assert (ours.returncode, ours.stderr) == (0, "")
    assert ours.stdout == theirs.stdout
    assert ours.stdout
    if not any(a.startswith(("-l", "--level")) for a in args):      # \x escapes of /dev/kmsg undone
        assert 'loud: "quoted" \\ back, café, tab\there\n' in ours.stdout


@pytest.mark.parametrize("args", [["-q"], ["--foo"], ["--level"], ["-l"], ["-l", "bogus"], ["--json=1"]],
                         ids=repr)
def test_option_errors_are_util_linux_dmesg(machine, tmp_path: Path, args: list[str]) -> None:
    m, mnt = machine
    ours, theirs = shim(mnt, *args), util_linux(syslog_file(m, tmp_path / "syslog"), *args)
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)


def test_json(machine) -> None:
    """util-linux's layout on /dev/kmsg (one message per entry; `-F FILE` would run messages together)."""
    m, mnt = machine
    out = shim(mnt, "--json", "-l", "err").stdout
    assert out == ('{\n   "dmesg": [\n      {\n         "pri": 3,\n         "time":     0.120000,\n'
                   '         "msg": "loud: \\"quoted\\" \\\\ back, café, tab\\there"\n      }\n   ]\n}\n')
    decoded = json.loads(shim(mnt, "--json", "-x").stdout)["dmesg"]
    assert decoded[0] == {"fac": "kern", "pri": "notice", "time": 0.0, "msg": m.kernel.printk.records[0].text}
    assert len(decoded) == sum(1 for r in m.kernel.printk.records if not r.pr_debug)


def test_ctime(machine) -> None:
    m, mnt = machine
    first = shim(mnt, "-T").stdout.splitlines()[0]
    assert re.fullmatch(r"\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\] Linux version .*", first), first
    uptime = (mnt / "proc/uptime").read_text()
    assert re.fullmatch(r"\d+\.\d\d \d+\.\d\d\n", uptime)
    assert float(uptime.split()[0]) == m.kernel.printk.clock_ns // 10_000_000 / 100


def test_clear_and_read_clear(machine) -> None:
    m, mnt = machine
    everything = shim(mnt).stdout
    assert shim(mnt, "-c").stdout == everything
    assert shim(mnt).stdout == ""
    (mnt / "sys/kernel/debug/loud").write_text("7\n")
    assert shim(mnt).stdout.endswith("] loud: 7\n") and shim(mnt).stdout.count("\n") == 1
    assert shim(mnt, "-C").stdout == ""
    assert shim(mnt, "--json").stdout == '{\n   "dmesg": [\n   ]\n}\n'
    assert "Linux version" in (mnt / "khofs/dmesg").read_text()    # the whole log is still there


def test_follow_prints_new_records_and_the_next_kernels_log(machine, tmp_path: Path) -> None:
    m, mnt = machine
    image = tmp_path / "Image"
    subprocess.run([sys.executable, "-m", "khofs.cli", "mkimage", str(image)], check=True)
    proc = subprocess.Popen([sys.executable, "-m", "khofs.dmesg", "-w", "-l", "warn,err,notice"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "KHOFS_ROOT": str(mnt)})
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()

        def read_until(needle: str) -> list[str]:
            got: list[str] = []
            while not got or needle not in got[-1]:
                try:
                    got.append(lines.get(timeout=_GIVE_UP_S))
                except queue.Empty:
                    raise AssertionError(f"dmesg -w never printed {needle!r}: {got}") from None
            return got
        first = read_until("loud: \"quoted\"")
        assert first[0].endswith(f"] {m.kernel.printk.records[0].text}\n") and len(first) == 4
        (mnt / "sys/kernel/debug/loud").write_text("42\n")
        new = read_until("loud: 42")
        assert len(new) == 1 and new[0].endswith("] loud: 42\n")
        env = {**os.environ, "KHOFS_ROOT": str(mnt)}
        for args in (["-l", str(image), "-s", "--reuse-cmdline"], ["-e"]):
            subprocess.run([sys.executable, "-m", "khofs.kexec", *args], check=True, env=env, timeout=60)
        after = read_until("loud: \"quoted\"")
        assert after[0].split("] ", 1)[1].startswith("Linux version")
    finally:
        proc.kill()
        proc.wait()
