"""pytest plugin for KHO users (entry point ``pytest11``: installing khofs is enough).

Fixtures:
    kho_machine(**Machine kwargs) -> a booted sim Machine (a factory; defaults from the options)
    kho_kexec(machine, ...)       -> finalize + kexec_file_load + reboot; the new kernel
    khofs_mount(machine)          -> the machine served through FUSE at a temporary path
Assertions (import them from khofs.pytest_plugin):
    assert_kho_revived(machine, phys, data)   the bytes are back at phys, preserved by KHO
    assert_no_kho_findings(machine)           no khofs diagnostic (loss check, sanitizer) logged
Options (group "khofs"): --khofs-kernel-version, --khofs-arch, --khofs-scrub, --khofs-kho-sanitizer.
Marker: fuse.

Importing this module costs nothing but pytest: sim is imported inside the fixtures.
"""

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_MOUNT_WAIT_S = 10.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("khofs", "khofs: simulated KHO machines")
    group.addoption("--khofs-kernel-version", default="6.16", metavar="V",
                    help="kernel version kho_machine boots unless a test says (6.16, 6.17, 6.18)")
    group.addoption("--khofs-arch", default="x86_64", choices=("x86_64", "arm64"),
                    help="architecture kho_machine boots unless a test says (x86_64, arm64)")
    group.addoption("--khofs-scrub", action="store_true",
                    help="kho_machine poisons memory a kernel did not preserve unless a test says")
    group.addoption("--khofs-kho-sanitizer", action="store_true",
                    help="kho_machine runs the KHO sanitizer unless a test says")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuse: the test mounts a machine (needs /dev/fuse and fusermount)")


@pytest.fixture
def kho_machine(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """A factory: kho_machine(mem="8G", cmdline="kho=on", modules=[...], ...) boots and returns a Machine.

    Keywords are Machine's; kernel_version, arch, scrub and kho_sanitizer default to
    --khofs-kernel-version, --khofs-arch, --khofs-scrub and --khofs-kho-sanitizer."""
    from sim.machine import Machine

    def boot(**kwargs: Any) -> Any:
        kwargs.setdefault("kernel_version", request.config.getoption("khofs_kernel_version"))
        kwargs.setdefault("arch", request.config.getoption("khofs_arch"))
        kwargs.setdefault("scrub", request.config.getoption("khofs_scrub"))
        kwargs.setdefault("kho_sanitizer", request.config.getoption("khofs_kho_sanitizer"))
        machine = Machine(**kwargs)
        machine.boot()
        return machine
    return boot


def kho_kexec(machine: Any, *, cmdline: str | None = None, initrd: bytes | None = None,
              image: bytes | None = None, finalize: bool = True) -> Any:
    """`echo 1 > kho/out/finalize; kexec -l Image -s [--initrd] --reuse-cmdline; kexec -e`; the new kernel.

    cmdline defaults to the running kernel's (/proc/cmdline), image to one of the running version
    for the machine's architecture (a bzImage, or an arm64 Image); finalize=False skips the
    finalize (as a 6.16 user may).  A failing step raises the OSError the kernel returns."""
    from sim.arch import make_kernel_image
    from sim.kernel.kexec_file import KEXEC_FILE_NO_INITRAMFS

    kernel = machine.kernel
    if finalize and kernel.debugfs.exists("kho/out/finalize"):
        if kernel.debugfs.read("kho/out/finalize") != b"1\n":
            kernel.debugfs.write("kho/out/finalize", b"1\n")
    image = make_kernel_image(machine.arch, kernel.info.version) if image is None else image
    flags = KEXEC_FILE_NO_INITRAMFS if initrd is None else 0
    kernel.kexec_file_load(image, initrd, kernel.cmdline if cmdline is None else cmdline, flags)
    return machine.kexec()


@pytest.fixture(name="kho_kexec")
def kho_kexec_fixture() -> Callable[..., Any]:
    """kho_kexec(machine, ...) as a fixture, for tests that take their helpers as arguments."""
    return kho_kexec


@pytest.fixture
def khofs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Any], Path]]:
    """khofs_mount(machine) serves the machine through FUSE and returns the mount point (a KHOFS_ROOT);
    every mount is unmounted at teardown.  Mark such tests `fuse`."""
    from khofs.fs import serve

    mounts: list[tuple[Path, threading.Thread]] = []

    def mount(machine: Any) -> Path:
        root = tmp_path_factory.mktemp("khofs-root")
        thread = threading.Thread(target=serve, args=(machine, str(root)), name="khofs-fuse", daemon=True)
        thread.start()
        mounts.append((root, thread))
        deadline = time.monotonic() + _MOUNT_WAIT_S
        while not os.path.ismount(root):
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail(f"khofs: cannot mount {root}")
            time.sleep(0.01)
        return root

    yield mount
    for root, thread in mounts:
        subprocess.run(["fusermount", "-u", str(root)], capture_output=True)
        thread.join(_MOUNT_WAIT_S)


def assert_kho_revived(machine: Any, phys: int, data: bytes) -> None:
    """The running kernel came in through KHO, [phys, phys+len(data)) holds data, and KHO preserved
    all of it (so it is the old kernel's memory at the same address, not luck)."""
    kernel = machine.kernel
    assert kernel.kho.kho_get_fdt() is not None, "khofs: the running kernel did not boot from a KHO hand-over"
    got = kernel.physmem.read(phys, len(data))
    if got != data:
        first = next(i for i, (a, b) in enumerate(zip(got, data, strict=True)) if a != b)
        raise AssertionError(f"khofs: memory at {phys + first:#x} differs after the kexec "
                             f"({got[first]:#04x} != {data[first]:#04x})")
    gap = kernel.kho.kho_preserved_gap(phys, len(data))
    assert gap is None, f"khofs: {gap:#x} holds the bytes but was not preserved by KHO"


def assert_no_kho_findings(machine: Any) -> None:
    """No warning or error of the simulator's own (lines naming khofs: the loss check, the KHO
    sanitizer, a module's oops) in the running kernel's log."""
    from sim.kernel.printk import LOGLEVEL_WARNING

    findings = [r.text for r in machine.kernel.printk.records
                if r.level <= LOGLEVEL_WARNING and "khofs" in r.text]
    assert not findings, "khofs findings:\n" + "\n".join(findings)
