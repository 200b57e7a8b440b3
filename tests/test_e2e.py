"""The whole KHO workflow through `khofs run`, at the real absolute paths, in a real bash."""

import subprocess
import sys
from pathlib import Path

from test_fs_harness import KHO_CMDLINE, REPO

WORKFLOW = r"""
set -e
khofs_mkimage "$IMAGES/Image"
dmesg | grep -c 'KHO: scratch areas'
cat /sys/kernel/debug/kho/out/scratch_len | head -1
# n1 is the only 64 MiB range in memblock/reserved: where reserve_mem put it.
while read -r _ range _; do
    (( ${range##*..} - ${range%%..*} + 1 == 64 * 1024 * 1024 )) && n1=$(( ${range%%..*} ))
done < /sys/kernel/debug/memblock/reserved
head -c 4096 /dev/urandom > "$IMAGES/pattern"
mem=/dev/mem; [ -f $mem ] || mem=$KHOFS_ROOT/dev/mem     # containers may have no /dev/mem to bind over
dd if="$IMAGES/pattern" of=$mem bs=4096 seek=$((n1 / 4096)) conv=notrunc status=none
echo 1 > /sys/kernel/debug/kho/out/finalize
dtc -I dtb -O dts /sys/kernel/debug/kho/out/fdt | grep -c 'compatible = "kho-v1"'
kexec -l "$IMAGES/Image" -s --reuse-cmdline
cat /sys/kernel/kexec_loaded
kexec -e
dtc /sys/kernel/debug/kho/in/fdt | grep -c 'preserved-memory-map'
dd if=$mem bs=4096 skip=$((n1 / 4096)) count=1 status=none | cmp - "$IMAGES/pattern" && echo same
dmesg | grep -o "Revived memory reservation 'n1' from KHO"
cat /proc/cmdline
"""


def test_kho_workflow_in_a_private_namespace(tmp_path: Path) -> None:
    before = Path("/proc/self/mountinfo").read_text()
    script = WORKFLOW.replace("khofs_mkimage", f"{sys.executable} -m khofs.cli mkimage")
    r = subprocess.run([sys.executable, "-m", "khofs.cli", "run", "--cmdline", KHO_CMDLINE, "--",
                        "bash", "-c", script], capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "IMAGES": str(tmp_path),
                            "PYTHONPATH": str(REPO)})
    libfuse_noise = "Ignoring invalid max threads value 4294967295 > max (100000).\n"   # libfuse#1003
    assert (r.returncode, r.stderr.replace(libfuse_noise, "")) == (0, ""), r.stderr
    assert r.stdout.splitlines() == ["1", "0x1000000", "1", "1", "1", "same",
                                     "Revived memory reservation 'n1' from KHO", KHO_CMDLINE]
    assert Path("/proc/self/mountinfo").read_text() == before


def test_run_exit_status_and_errors_are_one_line(tmp_path: Path) -> None:
    khofs = [sys.executable, "-m", "khofs.cli"]
    r = subprocess.run([*khofs, "run", "--", "bash", "-c", "exit 7"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 7
    r = subprocess.run([*khofs, "run", "--mem", "banana", "--", "true"], capture_output=True, text=True)
    assert (r.returncode, r.stderr.count("\n"), "Traceback" in r.stderr) == (1, 1, False)
    r = subprocess.run([*khofs, "mount", str(tmp_path / "missing")], capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (1, f"khofs: cannot mount {tmp_path}/missing: not a directory\n")
