"""README "Write a KHO user": its module, its pytest test and its shell session, run as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_fs_harness import NO_DEV_MEM

from khofs.pytest_plugin import kho_kexec
from sim.kexec_handover import Machine

REPO = Path(__file__).resolve().parent.parent


def readme_blocks() -> list[str]:
    """The fenced code blocks of the README's "Write a KHO user" section, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Write a KHO user\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:python|sh)\n(.*?)```", section, re.S)


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """demo_kho.py as the README prints it, in a directory outside the repository."""
    (tmp_path / "demo_kho.py").write_text(readme_blocks()[0])
    return tmp_path


def environment() -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)               # where `khofs` is installed
    return {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def test_the_readme_pytest_example_passes_with_only_khofs_installed(demo: Path) -> None:
    """The plugin comes from the pytest11 entry point alone: no conftest, no repo on the path."""
    (demo / "test_demo.py").write_text(readme_blocks()[2])
    env = {k: v for k, v in environment().items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_demo.py"],
                       cwd=demo, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout


def test_the_readme_shell_example_preserves_across_two_kexecs(demo: Path) -> None:
    r = subprocess.run(["bash", "-euc", readme_blocks()[1]], cwd=demo, capture_output=True, text=True,
                       env=environment(), timeout=120)
    assert (r.returncode, r.stderr) == (0, NO_DEV_MEM), r.stderr
    assert r.stdout == "boot 1\nboot 2\nboot 3\n"


def test_the_module_runs_in_every_kernel_and_keeps_only_what_ram_holds(demo: Path) -> None:
    """Machine(modules=...): each kernel runs the file afresh (globals do not survive), and on a
    scrubbing machine the journal survives because KHO preserved it."""
    m = Machine(cmdline="kho=on", scrub=True, modules=[str(demo / "demo_kho.py")])
    k0 = m.boot()
    assert k0.debugfs.read("demo_journal") == b"boot 1\n"
    k0.debugfs.write("kho/out/finalize", b"1\n")
    assert k0.debugfs.listdir("kho/out/sub_fdts") == ["demo"]
    first = k0.modules[0]
    k1 = kho_kexec(m)
    # A fresh namespace: the new kernel's init function is another object with other globals.
    (old_init,), (new_init,) = first.initcalls["device"], k1.modules[0].initcalls["device"]
    assert new_init is not old_init and new_init.__globals__ is not old_init.__globals__
    assert k1.debugfs.read("demo_journal") == b"boot 1\nboot 2\n"
    assert "] demo: restored boot count 1 and the journal at 0x" in k1.dmesg()


OOPS = '''
from sim.kexec_handover import KEXEC_KHO_FINALIZE, NOTIFY_DONE, module_init

@module_init
def oops_init(kernel):
    kernel.pr_info("oops: init")
    kernel.debugfs_create_file("oops", 0o444, None, lambda: 1 / 0)

    def oops_notifier(cmd, ser):
        if cmd == KEXEC_KHO_FINALIZE:
            raise RuntimeError("no tree today")
        return NOTIFY_DONE
    kernel.register_kho_notifier(oops_notifier)
    raise ValueError("after the notifier")
'''


def test_an_exception_in_a_module_is_an_oops_in_the_log_not_a_crash(tmp_path: Path) -> None:
    """Init, a debugfs file and a notifier raise: each is logged with `khofs` and its traceback; the
    kernel boots, the file reads empty, and finalize fails as for a notifier returning NOTIFY_BAD."""
    (tmp_path / "oops.py").write_text(OOPS)
    m = Machine(cmdline="kho=on", modules=[tmp_path / "oops.py"])
    k = m.boot()
    log = k.dmesg()
    assert "] oops: init\n" in log
    assert "] khofs: module oops: oops_init() raised an exception:\n" in log
    assert 'ValueError: after the notifier' in log
    assert k.debugfs.read("oops") == b""
    assert "khofs: module oops: debugfs file oops raised an exception:" in k.dmesg()
    with pytest.raises(OSError) as e:
        k.debugfs.write("kho/out/finalize", b"1\n")
    assert e.value.errno == 1                     # notifier_to_errno(NOTIFY_BAD) = -EPERM
    assert "RuntimeError: no tree today" in k.dmesg()
    assert "] KHO: Failed to convert KHO state tree: -1\n" in k.dmesg()


def test_module_errors_at_machine_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read module .*missing.py: No such file or directory"):
        Machine(modules=[tmp_path / "missing.py"])
    (tmp_path / "bad.py").write_text("def f(:\n")
    with pytest.raises(ValueError, match=r"module .*bad.py: invalid syntax \(line 1\)"):
        Machine(modules=[tmp_path / "bad.py"])
    (tmp_path / "idle.py").write_text("X = 1\n")
    k = Machine(modules=[tmp_path / "idle.py"]).boot()
    assert "] khofs: module idle: no @module_init or @late_initcall function\n" in k.dmesg()


def test_the_api_is_the_header_and_a_handle_users_never_build(tmp_path: Path) -> None:
    """6.18's names fail on 6.16 as an unresolved symbol would; KernelApi is handed out, not built."""
    import sim.kexec_handover as api
    assert set(api.__all__) <= set(dir(api))
    for name in ("kho_preserve_folio", "kho_preserve_phys", "kho_restore_folio", "kho_add_subtree",
                 "kho_retrieve_subtree", "register_kho_notifier", "unregister_kho_notifier",
                 "kho_is_enabled"):
        assert getattr(api.KernelApi, name).__doc__
    with pytest.raises(TypeError):
        api.KernelApi(None, "mine")
    (tmp_path / "late.py").write_text(
        "from sim.kexec_handover import late_initcall\n"
        "@late_initcall\n"
        "def late(kernel):\n"
        "    kernel.pr_info(f'late: {kernel.kernel_version} kho={kernel.kho_is_enabled()}')\n"
        "    kernel.kho_preserve_pages(1, 1)\n")
    log = Machine(cmdline="kho=on", modules=[tmp_path / "late.py"]).boot().dmesg()
    assert "] late: (6, 16) kho=True\n" in log
    assert "AttributeError: kho_preserve_pages: not in Linux 6.16 (added in 6.18)" in log
    log = Machine(cmdline="kho=on", kernel_version="6.18", modules=[tmp_path / "late.py"]).boot().dmesg()
    assert "] late: (6, 18) kho=True\n" in log and "khofs: module" not in log


def test_the_plugin_options_are_in_their_group() -> None:
    r = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, timeout=60)
    assert "khofs: simulated KHO machines:\n  --khofs-kernel-version=V" in r.stdout
    assert "--khofs-scrub" in r.stdout


@pytest.mark.fuse
def test_the_plugin_mount_serves_the_modules_files_and_takes_kexec(kho_machine, khofs_mount,
                                                                    demo: Path) -> None:
    """khofs_mount: the module's debugfs file in the mount, a real kexec through it, its log in dmesg."""
    m = kho_machine(cmdline="kho=on", scrub=True, modules=[str(demo / "demo_kho.py")])
    root = khofs_mount(m)
    assert (root / "sys/kernel/debug/demo_journal").read_text() == "boot 1\n"
    env = {**environment(), "KHOFS_ROOT": str(root)}
    script = ("echo 1 > $KHOFS_ROOT/sys/kernel/debug/kho/out/finalize && khofs mkimage Image && "
              "khofs-kexec -l Image -s --reuse-cmdline && khofs-kexec -e && khofs dmesg | grep demo:")
    r = subprocess.run(["bash", "-ec", script], cwd=demo, capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"\[ *\d+\.\d{6}\] demo: restored boot count 1 and the journal at 0x[0-9a-f]+\n",
                        r.stdout)
    assert (root / "sys/kernel/debug/demo_journal").read_text() == "boot 1\nboot 2\n"
