"""The `khofs` command: its machine options, `attach` to a running `khofs mount`, and the shell."""

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_fs_harness import NO_DEV_MEM, host_binds

from khofs import cli
from sim.machine import Machine

KHOFS = [sys.executable, "-m", "khofs.cli"]


def test_every_machine_option_reaches_the_machine(tmp_path: Path) -> None:
    """One table feeds argparse and Machine: each flag lands on the keyword of the same name."""
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"any file serves as an initrd\n")
    args = cli.parser().parse_args(
        ["run", "--mem", "4G", "--nodes", "1", "--cmdline", "kho=on", "--kernel-version", "6.18",
         "--kernel-size", "48M", "--initrd", str(initrd), "--seed", "7", "--scrub", "--test-kho",
         "--", "true"])
    m = cli._boot(args)
    assert (m.mem, m.nodes, m.cmdline, m.kernel_version, m.kernel_size, m.initrd, m.scrub, m.test_kho) == \
        (4 << 30, 1, "kho=on", "6.18", 48 << 20, initrd.read_bytes(), True, True)
    assert m.kernel.load_addr + m.kernel.info.init_size == (16 + 48) << 20
    seeded = cli._boot(cli.parser().parse_args(["run", "--seed", "7", "--", "true"]))
    assert seeded.rng.random() == __import__("random").Random(7).random()
    # Every keyword of Machine has its option.
    keywords = set(inspect.signature(Machine).parameters)
    assert {o.keyword for o in cli.MACHINE_OPTIONS} == keywords
    assert {"--seed", "--initrd", "--kernel-size", "--scrub", "--module", "--kho-sanitizer"} <= \
        {o.flag for o in cli.MACHINE_OPTIONS}


@pytest.mark.parametrize("given", [["--mem", "4G"], ["--arch", "x86_64"], ["--scrub"], ["--module", "m.py"]])
def test_shell_attach_rejects_machine_options(given: list[str], monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The attached machine is already booted: a machine option (even one equal to its default)
    is a usage error, exit 2, before anything is attached."""
    monkeypatch.setattr(cli, "_attach", lambda args, command: pytest.fail("attached anyway"))
    with pytest.raises(SystemExit) as e:
        cli.main(["shell", "--attach", "/mnt", *given])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: khofs shell")
    assert f"khofs shell: error: argument --attach: not allowed with argument {given[0]} " in err


def test_shell_without_attach_boots_with_the_defaults_it_was_not_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    booted = []
    monkeypatch.setattr(cli, "_run", lambda args, command: booted.append(cli._boot(args)) or 0)
    assert cli.main(["shell", "--mem", "4G"]) == 0
    m, = booted
    assert (m.mem, m.nodes, m.arch, m.kernel_version, m.scrub, m.initrd) == \
        (4 << 30, 2, "x86_64", "6.16", False, None)


def test_unreadable_initrd_or_module_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([*KHOFS, "run", "--initrd", str(tmp_path / "none"), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (1, f"khofs: cannot read {tmp_path}/none: No such file or directory\n")
    r = subprocess.run([*KHOFS, "run", "--module", str(tmp_path / "none.py"), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == \
        (1, f"khofs: cannot read module {tmp_path}/none.py: No such file or directory\n")


@pytest.fixture
def daemon(tmp_path: Path):
    """A `khofs mount` daemon, unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    hello = tmp_path / "hello.py"
    hello.write_text("from sim.kexec_handover import module_init\n\n@module_init\ndef hello_init(kernel):\n"
                     "    kernel.debugfs_create_file('hello', 0o444, None,\n"
                     "                               lambda: 'hello from a module\\n')\n")
    r = subprocess.run([*KHOFS, "mount", str(mnt), "--cmdline", "kho=on reserve_mem=4m:4k:n1",
                        "--module", str(hello)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        yield mnt
    finally:
        subprocess.run([*KHOFS, "umount", str(mnt)], check=True, timeout=60)


def test_attach_runs_the_seed_workflow_against_a_running_mount(daemon: Path) -> None:
    """finalize, `dtc .../out/fdt` at the real path, and kexec (the clone)/dmesg shims, on the daemon's
    machine."""
    before = host_binds()
    script = ("echo 1 > /sys/kernel/debug/kho/out/finalize && dtc /sys/kernel/debug/kho/out/fdt"
              " && cat /sys/kernel/debug/hello"
              " && cat /proc/cmdline && test \"$KHOFS_ROOT\" = " + str(daemon) +
              " && type -P kexec dmesg && dmesg | grep -c 'Linux version'")
    r = subprocess.run([*KHOFS, "attach", "--kexec", "clone", str(daemon), "--", "bash", "-c", script],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stderr) == (0, NO_DEV_MEM), r.stderr
    assert 'compatible = "kho-v1";' in r.stdout and "memblock {" in r.stdout
    assert "kho=on reserve_mem=4m:4k:n1\n" in r.stdout and "hello from a module\n" in r.stdout
    assert r.stdout.count("/khofs-bin-") == 2 and r.stdout.endswith("\n1\n")
    # The finalize happened on the daemon's machine: it is still finalized for the next attach.
    assert (daemon / "sys/kernel/debug/kho/out/finalize").read_text() == "1\n"
    r = subprocess.run([*KHOFS, "attach", str(daemon), "--", "sh", "-c", "exit 5"], timeout=60)
    assert r.returncode == 5
    assert host_binds() == before


def test_attach_refuses_what_is_not_a_khofs_mount(tmp_path: Path) -> None:
    r = subprocess.run([*KHOFS, "attach", str(tmp_path), "--", "true"], capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (1, f"khofs: attach: {tmp_path} is not a khofs mount\n")
    r = subprocess.run([*KHOFS, "attach", str(tmp_path)], capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (1, "khofs: attach: no command given "
                                           "(khofs attach MOUNTPOINT -- CMD ARGS...)\n")


def test_shell_prompt_names_the_machine(daemon: Path) -> None:
    """`khofs shell --attach`: an interactive bash (prompt on stderr) whose prompt starts `(khofs) `."""
    env = {**os.environ, "HOME": str(daemon.parent)}          # no ~/.bashrc of the host's
    r = subprocess.run([*KHOFS, "shell", "--attach", str(daemon)], input="cat /proc/cmdline; exit 4\n",
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 4
    assert r.stdout == "kho=on reserve_mem=4m:4k:n1\n"
    assert "(khofs) " in r.stderr
