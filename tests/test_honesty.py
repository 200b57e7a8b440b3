"""The design's honesty rule: after `kexec -e` nothing passes from the old kernel to the new one except
simulated RAM and the boot parameters (design.md "Layers"; issue 4 item 2)."""

import gc
import types
from typing import Any

import pytest
from kho_common import (
    arch,  # noqa: F401 - the fixture every test here runs under
    boot,
    finalize,
    kexec,
    load,
    log,
    machine,
    prop_u64,
)

from sim.init.main import Kernel
from sim.machine import Machine

pytestmark = pytest.mark.usefixtures("arch")

_WALK_LIMIT = 2_000_000


def _children(obj: Any) -> list[Any]:
    """Referents that are instance state.  Modules and classes are code, not kernel state (and lead to
    sys.modules, i.e. to the test's own frames), so they are not entered; a function contributes only
    what it captured (closure cells, defaults), never its module globals."""
    if isinstance(obj, types.ModuleType | type):
        return []
    if isinstance(obj, types.FunctionType):
        return [c.cell_contents for c in obj.__closure__ or () if _cell_full(c)] + \
            list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
    if isinstance(obj, types.MethodType):
        return [obj.__self__, obj.__func__]
    return gc.get_referents(obj)


def _cell_full(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def reachable(root: object) -> dict[int, object]:
    """Every object reachable from root through instance state, by id (bounded, so it always ends)."""
    seen: dict[int, object] = {id(root): root}
    todo = [root]
    while todo:
        assert len(seen) < _WALK_LIMIT, "object graph walk did not converge"
        for child in _children(todo.pop()):
            if id(child) not in seen:
                seen[id(child)] = child
                todo.append(child)
    return seen


def _old_parts(k: Kernel) -> dict[str, object]:
    return {"Kernel": k, "KexecHandover": k.kho, "Memblock": k.memblock, "Debugfs": k.debugfs,
            "PageAllocator": k.page_alloc, "Printk": k.printk, "ReserveMem": k.reserve_mem,
            "Kexec": k.kexec, "Slab": k.slab, "kimage": k.kexec.kexec_image}


def _handover(test_kho: bool = True, version: str = "6.16") -> tuple[Machine, Kernel, Kernel]:
    m, k0 = boot(test_kho=test_kho, version=version)
    finalize(k0)
    load(k0)
    return m, k0, m.kexec()


def test_walk_finds_what_it_should() -> None:
    """Control: the walk does reach a kernel's own parts (else the next test would pass vacuously)."""
    _, k = boot()
    seen = reachable(k)
    for name, part in _old_parts(k).items():
        if part is not None:
            assert id(part) in seen, name
    # ...including parts only a closure holds (debugfs seq files capture the kernel's objects).
    assert id(k.kho) in reachable(k.debugfs)


def test_no_object_of_the_old_kernel_is_reachable_from_the_new_one() -> None:
    m, k0, k1 = _handover()
    assert k1 is not k0 and m.kernel is k1
    old = {id(v): name for name, v in _old_parts(k0).items() if v is not None}
    for root in (k1, m):
        leaked = [old[i] for i in reachable(root) if i in old]
        assert leaked == [], f"reachable from {type(root).__name__}: {leaked}"


def test_a_chain_of_kernels_never_links_back() -> None:
    """Two kexecs later, neither predecessor is reachable (nothing accumulates across generations)."""
    m, k0, k1 = _handover()
    k2 = kexec(m)
    seen = reachable(k2)
    for k in (k0, k1):
        assert not [n for n, v in _old_parts(k).items() if v is not None and id(v) in seen]


def test_the_new_kernel_reads_the_memblock_fdt_from_ram() -> None:
    """Flip one byte of the preserved memblock sub-FDT between finalize and kexec -e: the new kernel
    sees node `n9` instead of `n1` (node name at 0x64, spec §3 vector layout) and reacts to it."""
    m, k0 = boot()
    finalize(k0)
    out = k0.debugfs.read("kho/out/sub_fdts/memblock")
    phys = prop_u64(k0.debugfs.read("kho/out/fdt"), "/memblock", "fdt")
    assert out[0x64:0x68] == b"n1\0\0"
    load(k0)
    m.physmem.write(phys + 0x65, b"9")
    k1 = m.kexec()
    assert "FDT 'memblock' has no child 'n1': -1" in log(k1)
    assert not [line for line in log(k1) if "Revived" in line]
    seen = k1.debugfs.read("kho/in/sub_fdts/memblock")
    assert seen == out[:0x65] + b"9" + out[0x66:]


def test_the_new_kernel_version_comes_from_the_image_bytes() -> None:
    """A 6.16 kernel loading a 6.18 image boots a 6.18 kernel: the release is read from RAM."""
    m, k0 = boot()
    k1 = kexec(m, version="6.18")
    assert k0.info.version == "6.16" and k1.info.version == "6.18"
    banner = next(line for line in log(k1) if line.startswith("Linux version"))
    assert banner == ("Linux version 6.18.0-khofs (khofs@khofs) (gcc (Debian 14.2.0-19) 14.2.0, "
                      "GNU ld (GNU Binutils for Debian) 2.44) #1 SMP PREEMPT_DYNAMIC "
                      "Sun Nov 30 00:00:00 UTC 2025")
    assert k1.dmesg().startswith("[    0.000000] ")


STATEFUL_MODULE = '''
from sim.kexec_handover import module_init

SEEN = []                       # a module global: lives and dies with one kernel

@module_init
def stateful_init(kernel):
    SEEN.append(kernel)
    kernel.register_kho_notifier(lambda cmd, ser: 0)
    kernel.pr_info(f"stateful: {len(SEEN)} kernel(s) seen")
'''


def test_a_user_module_starts_afresh_in_every_kernel(tmp_path) -> None:
    """Machine(modules=...): the new kernel's module, its globals and its notifier reach nothing of
    the old kernel, whose module instance kept a reference to it in a global."""
    (tmp_path / "stateful.py").write_text(STATEFUL_MODULE)
    m = machine(cmdline="kho=on", modules=[tmp_path / "stateful.py"])
    k0 = m.boot()
    finalize(k0)
    load(k0)
    k1 = m.kexec()
    assert "stateful: 1 kernel(s) seen" in log(k1) and "stateful: 1 kernel(s) seen" in log(k0)
    (old_init,) = k0.modules[0].initcalls["device"]
    (new_init,) = k1.modules[0].initcalls["device"]
    parts = {**_old_parts(k0), "Module": k0.modules[0], "KernelApi": k0.modules[0].api,
             "module globals": old_init.__globals__}
    old = {id(v): name for name, v in parts.items() if v is not None}
    for root in (k1, m, new_init.__globals__):
        leaked = [old[i] for i in reachable(root) if i in old]
        assert leaked == [], f"reachable from {type(root).__name__}: {leaked}"
