"""KHO users as modules: the services a module's init function gets, and the loader (kernel/module).

A user module is a Python source file built into every kernel of a machine.  Each
kernel executes the file afresh into its own namespace and calls the functions it
marked with ``@module_init`` or ``@late_initcall`` at that initcall level, so module
globals live and die with one kernel, as a driver's statics do: whatever should
outlive a kexec must go through KHO, i.e. through RAM.  The public names are
re-exported, with the rest of the KHO API, by ``sim.kexec_handover``.
"""

import errno
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sim.fs.debugfs import Dentry
from sim.kernel import kexec_handover as _kho
from sim.kernel.kexec_handover import NOTIFY_BAD, KhoSerialization, Notifier
from sim.mm.page_alloc import Folio
from sim.sizes import PAGE_SIZE

if TYPE_CHECKING:
    from sim.init.main import Kernel

InitFn = Callable[["KernelApi"], int | None]
F = TypeVar("F", bound=InitFn)

_INITCALL_ATTR = "__khofs_initcall__"
DEVICE_INITCALL = "device"
LATE_INITCALL = "late"


def module_init(fn: F) -> F:
    """Mark fn as the module's init: called with a KernelApi at device_initcall level on every boot."""
    setattr(fn, _INITCALL_ATTR, DEVICE_INITCALL)
    return fn


def late_initcall(fn: F) -> F:
    """Mark fn to run at late_initcall level, after kho_init and reserve_mem's KHO set-up."""
    setattr(fn, _INITCALL_ATTR, LATE_INITCALL)
    return fn


@dataclass(frozen=True)
class ModuleSource:
    """A module as a machine holds it: its name and source, read once (the built kernel image)."""

    name: str
    path: str
    code: types.CodeType

    @classmethod
    def load(cls, module: "str | Path | types.ModuleType") -> "ModuleSource":
        """From a path to FILE.py or an imported module (whose file is re-read, never its objects)."""
        path = Path(module.__file__ or "") if isinstance(module, types.ModuleType) else Path(module)
        try:
            source = path.read_text()
        except OSError as e:
            raise ValueError(f"cannot read module {path}: {e.strerror}") from None
        try:
            code = compile(source, str(path), "exec")
        except SyntaxError as e:
            raise ValueError(f"module {path}: {e.msg} (line {e.lineno})") from None
        return cls(path.stem, str(path), code)


class KernelApi:
    """What a module may call in the kernel it runs in: the KHO API of include/linux/kexec_handover.h,
    folios, physical memory, printk, debugfs and the RNG.  Each kernel builds one per module; a module
    never constructs one.  Calls return the kernel's values: 0 or -errno, None for a NULL pointer."""

    def __init__(self, kernel: "Kernel", name: str, *, _by_kernel: bool = False) -> None:
        if not _by_kernel:
            raise TypeError("KernelApi is handed to a module's init function; it is not built by hand")
        self._k = kernel
        self.name = name

    # -- the kernel it runs in --

    @property
    def kernel_version(self) -> tuple[int, int]:
        """(6, 16), (6, 17) or (6, 18): the running kernel's version, for version-dependent formats."""
        return self._k.kver[0], self._k.kver[1]

    def _since(self, version: tuple[int, int], call: str) -> None:
        if self.kernel_version < version:
            raise AttributeError(f"{call}: not in Linux {self._k.info.version} "
                                 f"(added in {version[0]}.{version[1]})")

    # -- include/linux/kexec_handover.h --

    def kho_is_enabled(self) -> bool:
        """kho=on on this kernel's command line (and KHO initialized)."""
        return self._k.kho.kho_is_enabled()

    def kho_preserve_folio(self, folio: Folio) -> int:
        """Hand the folio over at the next finalize; 0 or -errno."""
        return self._k.kho.kho_preserve_folio(folio)

    def kho_preserve_phys(self, phys: int, size: int) -> int:
        """Hand a page-aligned physical range over; 0 or -EINVAL if not page aligned."""
        return self._k.kho.kho_preserve_phys(phys, size)

    def kho_preserve_pages(self, pfn: int, nr_pages: int) -> int:
        """6.18: hand nr_pages pages from pfn over."""
        self._since((6, 18), "kho_preserve_pages")
        return self._k.kho.kho_preserve_pages(pfn, nr_pages)

    def kho_restore_folio(self, phys: int) -> Folio | None:
        """After a kexec: take back the folio preserved at phys, or None (not preserved, not RAM)."""
        return self._k.kho.kho_restore_folio(phys)

    def kho_preserve_vmalloc(self, data: bytes) -> tuple[int, bytes]:
        """6.18: preserve data as a vmalloc area; (0, its 16-byte struct kho_vmalloc) or (-errno, b"")."""
        self._since((6, 18), "kho_preserve_vmalloc")
        return _kho.kho_preserve_vmalloc(self._k.kho, data)

    def kho_restore_vmalloc(self, preservation: bytes) -> bytes | None:
        """6.18: the data of a preserved vmalloc area, from its struct kho_vmalloc, or None."""
        self._since((6, 18), "kho_restore_vmalloc")
        return _kho.kho_restore_vmalloc(self._k.kho, preservation)

    def kho_add_subtree(self, ser: KhoSerialization, name: str, fdt_phys: int) -> int:
        """In a KEXEC_KHO_FINALIZE notifier: publish the sub-FDT at fdt_phys as /name in KHO's root FDT."""
        return self._k.kho.kho_add_subtree(ser, name, fdt_phys)

    def kho_retrieve_subtree(self, name: str) -> tuple[int, int]:
        """After a kexec: (0, phys of the sub-FDT the previous kernel added as name) or (-ENOENT, 0)."""
        return self._k.kho.kho_retrieve_subtree(name)

    def register_kho_notifier(self, nb: Notifier) -> int:
        """Call nb(cmd, ser) at finalize (KEXEC_KHO_FINALIZE, ser) and abort (KEXEC_KHO_ABORT, None)."""
        return self._k.kho.register_kho_notifier(self._guarded_notifier(nb))

    def unregister_kho_notifier(self, nb: Notifier) -> int:
        """Remove nb from the chain; -ENOENT if it was not registered."""
        for registered in self._k.kho.chain:
            if getattr(registered, "__wrapped__", None) == nb:
                return self._k.kho.unregister_kho_notifier(registered)
        return -errno.ENOENT

    def _guarded_notifier(self, nb: Notifier) -> Notifier:
        def call(cmd: int, ser: KhoSerialization | None) -> int:
            try:
                return nb(cmd, ser)
            except Exception:                   # noqa: BLE001 - an oops in the module, not in khofs
                self._oops(getattr(nb, "__name__", "notifier"))
                return NOTIFY_BAD
        call.__wrapped__ = nb                   # type: ignore[attr-defined]
        return call

    # -- memory --

    def folio_alloc(self, order: int) -> Folio | None:
        """An unmovable folio of 2**order pages (GFP_KERNEL: never from KHO scratch), or None."""
        return self._k.page_alloc.alloc_pages(order)

    def folio_put(self, folio: Folio) -> None:
        """Give a folio back to the page allocator."""
        self._k.page_alloc.free_folio(folio)

    def phys_read(self, phys: int, size: int) -> bytes:
        """size bytes of physical memory at phys (what phys_to_virt(phys) points at)."""
        return self._k.physmem.read(phys, size)

    def phys_write(self, phys: int, data: bytes | bytearray) -> None:
        """Store data in physical memory at phys."""
        self._k.physmem.write(phys, bytes(data))

    def map_fdt(self, phys: int) -> bytes:
        """The FDT at phys as libfdt reads it there: the header's totalsize bytes."""
        return self._k.kho.map_fdt(phys, PAGE_SIZE)

    def csum_partial(self, data: bytes, wsum: int) -> int:
        """csum_partial() as this kernel's architecture computes it (x86_64's differs from lib/'s)."""
        return self._k.arch.csum_partial(data, wsum)

    def get_random_bytes(self, n: int) -> bytes:
        """n bytes from the machine's RNG (seeded: the same machine gives the same bytes)."""
        return self._k.machine.rng.randbytes(n)

    def get_random_u32(self) -> int:
        return self._k.machine.rng.getrandbits(32)

    # -- printk --

    def pr_err(self, text: str) -> None:
        self._k.printk.pr_err(text)

    def pr_warn(self, text: str) -> None:
        self._k.printk.pr_warn(text)

    def pr_info(self, text: str) -> None:
        self._k.printk.pr_info(text)

    def pr_debug(self, text: str) -> None:
        """Kept in the log but not shown by dmesg: pr_debug is compiled out in distribution kernels."""
        self._k.printk.pr_debug(text)

    def _oops(self, where: str) -> None:
        """A Python exception in module code: a khofs line and the traceback in the log, never a crash."""
        self._k.printk.pr_err(f"khofs: module {self.name}: {where} raised an exception:")
        self._k.printk.pr_err("".join(traceback.format_exc()).rstrip("\n"))

    # -- debugfs (fs/debugfs), under /sys/kernel/debug --

    def debugfs_create_dir(self, name: str, parent: Dentry | None = None) -> Dentry:
        """A directory; parent None is the debugfs root."""
        return self._k.debugfs.debugfs_create_dir(name, parent)

    def debugfs_create_blob(self, name: str, mode: int, parent: Dentry | None,
                            data: bytes | Callable[[], bytes]) -> Dentry:
        """A read-only binary file: fixed bytes, or a function called at each open."""
        reader = data if callable(data) else (lambda: bytes(data))
        return self._k.debugfs.debugfs_create_blob(name, mode, parent, self._guarded(name, reader, b""))

    def debugfs_create_file(self, name: str, mode: int, parent: Dentry | None,
                            show: Callable[[], str]) -> Dentry:
        """A seq_file: show() gives its text at each open."""
        return self._k.debugfs.debugfs_create_seq(name, mode, parent, self._guarded(name, show, ""))

    def debugfs_create_attr(self, name: str, mode: int, parent: Dentry | None, get: Callable[[], int],
                            set: Callable[[int], None] | None = None) -> Dentry:
        """DEFINE_DEBUGFS_ATTRIBUTE: reads print get() as %llu, writes parse a number for set()."""
        return self._k.debugfs.debugfs_create_attr(name, mode, parent, self._guarded(name, get, 0),
                                                   set and self._guarded(name, set, None))

    def debugfs_remove(self, dentry: Dentry) -> None:
        """Remove a file or a directory with everything below it."""
        self._k.debugfs.debugfs_remove(dentry)

    def _guarded(self, name: str, fn: Callable[..., Any], fallback: Any) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            try:
                return fn(*args)
            except OSError:
                raise                           # an errno the file operation returns on purpose
            except Exception:                   # noqa: BLE001 - an oops in the module, not in khofs
                self._oops(f"debugfs file {name}")
                return fallback
        return call


class Module:
    """One module in one kernel: a fresh namespace and the initcalls it marked."""

    def __init__(self, kernel: "Kernel", source: ModuleSource) -> None:
        self.api = KernelApi(kernel, source.name, _by_kernel=True)
        self.name = source.name
        self.initcalls: dict[str, list[InitFn]] = {DEVICE_INITCALL: [], LATE_INITCALL: []}
        namespace = types.ModuleType(source.name)
        namespace.__file__ = source.path
        try:
            exec(source.code, namespace.__dict__)
        except Exception:                       # noqa: BLE001 - an oops in the module, not in khofs
            self.api._oops("loading")
            return
        for value in vars(namespace).values():
            level = getattr(value, _INITCALL_ATTR, None)
            if level in self.initcalls:
                self.initcalls[level].append(value)
        if not any(self.initcalls.values()):
            kernel.printk.pr_warn(f"khofs: module {self.name}: no @module_init or @late_initcall function")

    def do_initcalls(self, level: str) -> None:
        for fn in self.initcalls[level]:
            try:
                fn(self.api)
            except Exception:                   # noqa: BLE001 - an oops in the module, not in khofs
                self.api._oops(f"{fn.__name__}()")
