"""Kexec HandOver (kernel/kexec_handover.c, Linux 6.16; 6.17/6.18 deltas by kernel version).

Outgoing: scratch areas, the preservation tracker, notifiers, finalize/abort
and the serialized preserved-memory map, all written into simulated RAM in the
kernel's wire format.  Incoming: kho_populate() from the boot parameters,
deserialization into memblock, kho_retrieve_subtree() and kho_restore_folio().
"""

import errno
import os
import struct
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING

from sim.fs.debugfs import Dentry
from sim.kernel.kexec_file import KEXEC_BUF_MEM_UNKNOWN, KexecBuf, Kimage, kexec_add_buffer
from sim.kernel.panic import warn
from sim.lib import fdt as libfdt
from sim.mm.early_ioremap import early_memremap, read_phys
from sim.mm.memblock import (
    MEMBLOCK_ALLOC_ACCESSIBLE,
    MEMBLOCK_ALLOC_ANYWHERE,
    MEMBLOCK_KHO_SCRATCH,
    MEMBLOCK_RSRV_NOINIT,
    NUMA_NO_NODE,
)
from sim.mm.page_alloc import Folio, pageblock_nr_pages
from sim.sizes import (
    CMA_MIN_ALIGNMENT_BYTES,
    MAX_PAGE_ORDER,
    PAGE_SHIFT,
    PAGE_SIZE,
    PFN_DOWN,
    PFN_PHYS,
    PFN_UP,
    PHYS_PFN,
    SZ_64K,
    U64_MAX,
    ULONG_MAX,
    count_trailing_zeros,
    ilog2,
    round_up,
)

if TYPE_CHECKING:
    from sim.init.main import Kernel

KHO_FDT_COMPATIBLE = "kho-v1"
PROP_PRESERVED_MEMORY_MAP = "preserved-memory-map"
PROP_SUB_FDT = "fdt"

KEXEC_KHO_FINALIZE = 0
KEXEC_KHO_ABORT = 1

NOTIFY_DONE = 0
NOTIFY_OK = 1
NOTIFY_STOP_MASK = 0x8000
NOTIFY_BAD = NOTIFY_STOP_MASK | 0x0002

KHO_PAGE_MAGIC = 0x4B484F50          # 'KHOP', 6.18
KHOSER_HDR_SIZE = 16
KHOSER_ELM_SIZE = 16
KHOSER_BITMAP_SIZE = (PAGE_SIZE - KHOSER_HDR_SIZE) // KHOSER_ELM_SIZE   # 255
KHO_SCRATCH_SIZE = 16                 # struct kho_scratch { u64 addr; u64 size; }
FDT_MAP_MAX = 64 << 20

Notifier = Callable[[int, "KhoSerialization | None"], int]


def notifier_from_errno(err: int) -> int:
    return NOTIFY_STOP_MASK | (NOTIFY_OK - err) if err else NOTIFY_OK


def notifier_to_errno(ret: int) -> int:
    ret &= ~NOTIFY_STOP_MASK
    return NOTIFY_OK - ret if ret > NOTIFY_OK else 0


@dataclass
class KhoSerialization:
    """struct kho_serialization: what FINALIZE notifiers get to add their subtrees."""

    fdt: Folio | None = None                       # the root FDT page
    sw: libfdt.FdtSw | None = None                 # its sequential writer while finalizing
    fdt_list: list[Dentry] = field(default_factory=list)
    sub_fdt_dir: Dentry | None = None
    # order -> {bitmap index -> physical address of the bitmap}
    track: dict[int, dict[int, int]] = field(default_factory=dict)
    preserved_mem_map: int = 0                     # phys of the first chunk


@dataclass(frozen=True)
class KhoScratch:
    addr: int
    size: int


@dataclass(frozen=True, slots=True)
class KhoMemChunk:
    """One struct khoser_mem_chunk as it lies in RAM.

    `num` is the header's count as stored; `bitmaps` holds the (phys_start, bitmap) pairs
    of the entries that fit in the chunk's page, so at most KHOSER_BITMAP_SIZE of them.
    """

    phys: int
    next: int
    order: int
    num: int
    bitmaps: tuple[tuple[int, int], ...]


def kho_mem_chunks(read: Callable[[int, int], bytes], first: int) -> Iterator[KhoMemChunk]:
    """Walk the preserved-memory chunk list from `first` as kho_mem_deserialize does.

    A pure decoder over `read(phys, size)` (PhysMem.read, a dump, /dev/mem), trusting the
    list as Linux does: it neither detects loops nor checks addresses, so a caller that
    meets hostile input stops the walk itself.  Each page is read before its chunk is
    yielded; the next one only when the walk resumes.
    """
    chunk = first
    while chunk:
        page = read(chunk, PAGE_SIZE)
        nxt, order, num = struct.unpack_from("<QII", page)
        bitmaps = tuple(struct.unpack_from("<QQ", page, KHOSER_HDR_SIZE + i * KHOSER_ELM_SIZE)
                        for i in range(min(num, KHOSER_BITMAP_SIZE)))
        yield KhoMemChunk(chunk, nxt, order, num, bitmaps)
        chunk = nxt


class KhoMemMapError(ValueError):
    """A chunk list the simulator will not follow; the message names the chunk and the fault."""


def kho_preserve_bits(kver: tuple[int, ...]) -> int:
    """PRESERVE_BITS: a 512-byte bitmap up to 6.17, a whole page from 6.18."""
    return PAGE_SIZE * 8 if kver >= (6, 18) else 512 * 8


def kho_mem_chunks_checked(read: Callable[[int, int], bytes], first: int, preserve_bits: int,
                           ram_size: int) -> Iterator[tuple[KhoMemChunk, tuple[int, ...]]]:
    """kho_mem_chunks with the checks Linux 6.16 lacks: each good chunk and its bitmaps' contents.

    Raises KhoMemMapError at the first loop, misaligned or out-of-RAM address, impossible
    count or order, after yielding every good chunk before it; a failing `read` (a dump or
    /dev/mem) is reported the same way.
    """
    nbytes = preserve_bits // 8

    def load(phys: int, size: int, what: str) -> bytes:
        try:
            return read(phys, size)
        except (OSError, ValueError) as e:
            raise KhoMemMapError(f"{what} cannot be read: {getattr(e, 'strerror', None) or e}") from None

    problem = _bad_chunk_addr(first, ram_size)
    if problem:
        raise KhoMemMapError(problem)
    seen = {first}
    chunks = kho_mem_chunks(lambda phys, size: load(phys, size, f"preserved memory map chunk 0x{phys:x}"),
                            first)
    for chunk in chunks:
        if chunk.num > KHOSER_BITMAP_SIZE:
            raise KhoMemMapError(f"preserved memory map chunk 0x{chunk.phys:x} claims {chunk.num} bitmaps")
        if chunk.order + PAGE_SHIFT >= 64:
            raise KhoMemMapError(f"preserved memory map chunk 0x{chunk.phys:x} has order {chunk.order}")
        contents = []
        for phys_start, bitmap in chunk.bitmaps:
            if bitmap + nbytes > ram_size:
                raise KhoMemMapError(f"preserved memory bitmap 0x{bitmap:x} is outside RAM")
            bits = int.from_bytes(load(bitmap, nbytes, f"preserved memory bitmap 0x{bitmap:x}"), "little")
            if bits and phys_start + (bits.bit_length() << (chunk.order + PAGE_SHIFT)) > ram_size:
                raise KhoMemMapError(f"preserved memory at 0x{phys_start:x} (order {chunk.order}) "
                                     "is outside RAM")
            contents.append(bits)
        if chunk.next in seen:
            raise KhoMemMapError(f"preserved memory map loops back to chunk 0x{chunk.next:x}")
        seen.add(chunk.next)
        problem = _bad_chunk_addr(chunk.next, ram_size)
        if problem:
            raise KhoMemMapError(problem)
        yield chunk, tuple(contents)


def _unpack_scratch(raw: bytes) -> list[KhoScratch]:
    """A struct kho_scratch[] as it lies in RAM, whole entries only."""
    whole = len(raw) - len(raw) % KHO_SCRATCH_SIZE
    return [KhoScratch(addr, size) for addr, size in struct.iter_unpack("<QQ", raw[:whole])]


class KexecHandover:
    """One kernel's KHO state (the kho_out / kho_in / scratch globals of kexec_handover.c)."""

    def __init__(self, kernel: "Kernel") -> None:
        self.k = kernel
        self.kho_enable = False
        self.scratch_scale = 200
        self.scratch_size_lowmem = 0
        self.scratch_size_global = 0
        self.scratch_size_pernode = 0
        self.kho_scratch_phys = 0          # where struct kho_scratch[] lives in RAM
        self.kho_scratch_cnt = 0
        self.chain: list[Notifier] = []
        self.ser = KhoSerialization()
        self.finalized = False
        self.out_dir: Dentry | None = None
        self.debugfs_root: Dentry | None = None
        self.kho_in_fdt_phys = 0
        self.kho_in_scratch_phys = 0
        self.kho_in_dir: Dentry | None = None
        self.kho_in_fdt_list: list[Dentry] = []
        # Claims on preserved memory made before kho_memory_init read the map (reserve_mem
        # revives while the command line is parsed); None once the map has been read.
        self._pending_claims: list[tuple[str, int, int]] | None = []

    # -- version switches (spec kho.md §0) --

    @property
    def preserve_bits(self) -> int:
        return kho_preserve_bits(self.k.kver)

    # -- command line --

    def kho_is_enabled(self) -> bool:
        return self.kho_enable

    # -- scratch (cold boot) --

    @property
    def kho_scratch(self) -> list[KhoScratch]:
        """The scratch array as it stands in RAM (the kernel only ever holds a pointer to it)."""
        return _unpack_scratch(self.k.physmem.read(self.kho_scratch_phys,
                                                   self.kho_scratch_cnt * KHO_SCRATCH_SIZE))

    def scratch_size_update(self) -> None:
        if not self.scratch_scale:
            return
        mb = self.k.memblock
        low_limit = self.k.arch.arch_low_address_limit
        size = mb.reserved_kern_size(low_limit, NUMA_NO_NODE) * self.scratch_scale // 100
        self.scratch_size_lowmem = round_up(size, CMA_MIN_ALIGNMENT_BYTES)
        size = mb.reserved_kern_size(MEMBLOCK_ALLOC_ANYWHERE, NUMA_NO_NODE) * self.scratch_scale // 100
        # phys_addr_t arithmetic: lowmem's rounding can exceed the total, and the u64 wraps back to 0.
        size = (size - self.scratch_size_lowmem) & U64_MAX
        self.scratch_size_global = round_up(size, CMA_MIN_ALIGNMENT_BYTES) & U64_MAX

    def scratch_size_node(self, nid: int) -> int:
        if self.scratch_scale:
            size = self.k.memblock.reserved_kern_size(MEMBLOCK_ALLOC_ANYWHERE, nid)
            size = size * self.scratch_scale // 100
        else:
            size = self.scratch_size_pernode
        return round_up(size, CMA_MIN_ALIGNMENT_BYTES)

    def kho_reserve_scratch(self) -> None:
        """Carve the scratch areas out of memblock (runs after all early allocations)."""
        if not self.kho_enable:
            return
        mb = self.k.memblock
        self.scratch_size_update()
        self.kho_scratch_cnt = len(self.k.online_nodes) + 2
        array = mb.alloc(self.kho_scratch_cnt * KHO_SCRATCH_SIZE, PAGE_SIZE)
        areas: list[KhoScratch] = []
        ok = bool(array)
        if ok:
            plan: list[tuple[int, Callable[[int], int]]] = [
                (self.scratch_size_lowmem, lambda size: mb.phys_alloc_range(
                    size, CMA_MIN_ALIGNMENT_BYTES, 0, self.k.arch.arch_low_address_limit)),
                (self.scratch_size_global, lambda size: mb.phys_alloc(size, CMA_MIN_ALIGNMENT_BYTES)),
            ]
            for nid in self.k.online_nodes:
                plan.append((self.scratch_size_node(nid), lambda size, nid=nid: mb.alloc_range_nid(
                    size, CMA_MIN_ALIGNMENT_BYTES, 0, MEMBLOCK_ALLOC_ACCESSIBLE, nid, True)))
            for size, alloc in plan:
                addr = alloc(size)
                if not addr:
                    ok = False
                    break
                areas.append(KhoScratch(addr, size))
        if not ok:
            for area in reversed(areas):
                mb.phys_free(area.addr, area.size)
            if array:
                mb.free(array, self.kho_scratch_cnt * KHO_SCRATCH_SIZE)
            self.kho_enable = False
            self.kho_scratch_cnt = 0
            # "kho: warn if KHO is disabled due to an error" went in through mm-hotfixes-stable
            # on 2025-08-19, before 6.17.0: 6.17.4 prints it, 6.16.0 does not.
            if self.k.kver >= (6, 17):
                self.k.printk.pr_warn("KHO: Failed to reserve scratch area, disabling kexec handover")
            return
        self.kho_scratch_phys = array
        self.k.physmem.write(array, b"".join(struct.pack("<QQ", a.addr, a.size) for a in areas))

    # -- the preservation tracker --

    def _zalloc(self, size: int) -> int:
        """Bitmaps and chunks alike: 6.18 takes a zeroed page (its bitmaps are page-sized), 6.16 kzallocs."""
        if self.k.kver >= (6, 18):
            folio = self.k.page_alloc.alloc_pages(0)
            if folio is None:
                return 0
            self.k.physmem.fill(folio.phys, PAGE_SIZE, 0)
            return folio.phys
        return self.k.slab.kzalloc(size)

    def _free(self, phys: int) -> None:
        if self.k.kver >= (6, 18):
            self.k.page_alloc.free_folio(Folio(PHYS_PFN(phys), 0))
        else:
            self.k.slab.kfree(phys)

    def _kho_preserve_order(self, pfn: int, order: int) -> int:
        if self.k.kver >= (6, 18) and self.finalized:
            return -errno.EBUSY
        pfn_high = pfn >> order
        bits = self.ser.track.setdefault(order, {})
        index = pfn_high // self.preserve_bits
        if index not in bits:
            phys = self._zalloc(self.preserve_bits // 8)
            if not phys:
                return -errno.ENOMEM
            bits[index] = phys
        bit = pfn_high % self.preserve_bits
        addr = bits[index] + bit // 8
        byte = self.k.physmem.read(addr, 1)[0]
        self.k.physmem.write(addr, bytes([byte | 1 << (bit % 8)]))
        if self.k.kho_sanitizer is not None:
            self.k.kho_sanitizer.preserved(pfn_high << order, order)
        return 0

    def _kho_unpreserve(self, pfn: int, end_pfn: int) -> None:
        while pfn < end_pfn:
            order = min(count_trailing_zeros(pfn), ilog2(end_pfn - pfn))
            pfn_high = pfn >> order
            index = pfn_high // self.preserve_bits
            bitmap = self.ser.track.get(order, {}).get(index)
            if bitmap is not None:
                bit = pfn_high % self.preserve_bits
                addr = bitmap + bit // 8
                byte = self.k.physmem.read(addr, 1)[0]
                self.k.physmem.write(addr, bytes([byte & ~(1 << (bit % 8))]))
                if self.k.kho_sanitizer is not None:
                    self.k.kho_sanitizer.unpreserved(pfn_high << order, order)
            pfn += 1 << order

    def kho_preserve_folio(self, folio: Folio) -> int:
        if self.finalized:
            return -errno.EBUSY
        return self._kho_preserve_order(folio.pfn, folio.order)

    def _preserve_range(self, pfn: int, end_pfn: int) -> int:
        """The greedy split shared by kho_preserve_phys (6.16) and kho_preserve_pages (6.18)."""
        start_pfn = pfn
        while pfn < end_pfn:
            order = min(count_trailing_zeros(pfn), ilog2(end_pfn - pfn))
            err = self._kho_preserve_order(pfn, order)
            if err:
                self._kho_unpreserve(start_pfn, pfn)
                return err
            pfn += 1 << order
        return 0

    def kho_preserve_phys(self, phys: int, size: int) -> int:
        if self.finalized:
            return -errno.EBUSY
        if phys % PAGE_SIZE or size % PAGE_SIZE:
            return -errno.EINVAL
        return self._preserve_range(PHYS_PFN(phys), PHYS_PFN(phys + size))

    def kho_preserve_pages(self, pfn: int, nr_pages: int) -> int:
        """6.18's replacement for kho_preserve_phys."""
        return self._preserve_range(pfn, pfn + nr_pages)

    # -- serialization (wire format, spec kho.md §4.2) --

    def _new_chunk(self, prev: int, order: int) -> int:
        chunk = self._zalloc(PAGE_SIZE)
        if not chunk:
            return 0
        self.k.physmem.write(chunk + 8, struct.pack("<I", order))
        if prev:
            self.k.physmem.write_u64(prev, chunk)
        return chunk

    def kho_mem_ser_free(self, first: int) -> None:
        chunk = first
        while chunk:
            nxt = self.k.physmem.read_u64(chunk)
            self._free(chunk)
            chunk = nxt

    def kho_mem_serialize(self) -> int:
        first = chunk = 0
        for order in sorted(self.ser.track):
            chunk = self._new_chunk(chunk, order)
            if not chunk:
                self.kho_mem_ser_free(first)
                return -errno.ENOMEM
            first = first or chunk
            num = 0
            for index in sorted(self.ser.track[order]):
                if num == KHOSER_BITMAP_SIZE:
                    chunk = self._new_chunk(chunk, order)
                    if not chunk:
                        self.kho_mem_ser_free(first)
                        return -errno.ENOMEM
                    num = 0
                phys_start = (index * self.preserve_bits) << (order + PAGE_SHIFT)
                self.k.physmem.write(chunk + KHOSER_HDR_SIZE + num * KHOSER_ELM_SIZE,
                                     struct.pack("<QQ", phys_start, self.ser.track[order][index]))
                num += 1
                self.k.physmem.write(chunk + 12, struct.pack("<I", num))
        self.ser.preserved_mem_map = first
        return 0

    # -- notifiers, subtrees, finalize/abort --

    def register_kho_notifier(self, nb: Notifier) -> int:
        """blocking_notifier_chain_register(): all priorities are 0, so a new block goes last."""
        if nb in self.chain:
            warn(self.k.printk, "kernel/notifier.c:28", "notifier_chain_register",
                 f"notifier callback {getattr(nb, '__name__', repr(nb))} already registered")
            return -errno.EEXIST
        self.chain.append(nb)
        return 0

    def unregister_kho_notifier(self, nb: Notifier) -> int:
        if nb not in self.chain:
            return -errno.ENOENT
        self.chain.remove(nb)
        return 0

    def _call_chain(self, cmd: int, ser: KhoSerialization | None) -> int:
        ret = NOTIFY_DONE
        for nb in list(self.chain):
            ret = nb(cmd, ser)
            if ret & NOTIFY_STOP_MASK:
                break
        return ret

    def _debugfs_fdt_add(self, fdt_list: list[Dentry], parent: Dentry | None, name: str,
                         fdt_phys: int) -> int:
        """kho_debugfs_fdt_add: a 0400 blob of the FDT's totalsize at creation time."""
        size = self._fdt_totalsize_at(fdt_phys)
        physmem = self.k.physmem
        if fdt_phys + size > physmem.size:
            # The blob would read through phys_to_virt() past the end of RAM: an oops in Linux.
            self.k.printk.pr_warn(f"KHO: fdt `{name}` [mem {fdt_phys:#018x}-{fdt_phys + size - 1:#018x}] "
                                  "runs past the end of RAM [khofs: not checked by Linux]")
            return -errno.EFAULT
        try:
            dentry = self.k.debugfs.debugfs_create_blob(name, 0o400, parent,
                                                        lambda: physmem.read(fdt_phys, size))
        except OSError as e:
            if e.errno == errno.EEXIST and parent is not None:
                self.k.printk.pr_err(f"debugfs: File '{name}' in directory '{parent.name}' already present!")
            return -(e.errno or errno.ENOMEM)
        fdt_list.insert(0, dentry)
        return 0

    def _fdt_totalsize_at(self, phys: int) -> int:
        return libfdt.fdt_totalsize(read_phys(self.k.physmem, phys, 8))

    def kho_add_subtree(self, ser: KhoSerialization, name: str, fdt_phys: int) -> int:
        """Record a sub-FDT's address in the root FDT and expose it in out/sub_fdts."""
        sw = ser.sw
        assert sw is not None, "kho_add_subtree outside a KEXEC_KHO_FINALIZE notifier"
        err = sw.begin_node(name)
        err |= sw.property(PROP_SUB_FDT, struct.pack("<Q", fdt_phys))
        err |= sw.end_node()
        if err:
            return err
        return self._debugfs_fdt_add(ser.fdt_list, ser.sub_fdt_dir, name, fdt_phys)

    def kho_out_update_debugfs_fdt(self) -> int:
        if self.finalized:
            assert self.ser.fdt is not None
            return self._debugfs_fdt_add(self.ser.fdt_list, self.out_dir, "fdt", self.ser.fdt.phys)
        for dentry in self.ser.fdt_list:
            self.k.debugfs.debugfs_remove(dentry)
        self.ser.fdt_list.clear()
        return 0

    def kho_abort(self) -> int:
        for order in self.ser.track.values():
            for bitmap in order.values():
                self._free(bitmap)
        self.ser.track.clear()
        if self.k.kho_sanitizer is not None:
            self.k.kho_sanitizer.aborted()
        if self.ser.preserved_mem_map:
            self.kho_mem_ser_free(self.ser.preserved_mem_map)
            self.ser.preserved_mem_map = 0
        err = notifier_to_errno(self._call_chain(KEXEC_KHO_ABORT, None))
        if err:
            self.k.printk.pr_err(f"KHO: Failed to abort KHO finalization: {err}")
        return err

    def kho_finalize(self) -> int:
        assert self.ser.fdt is not None
        sw = libfdt.FdtSw(PAGE_SIZE)
        self.ser.sw = sw
        err = sw.finish_reservemap()
        err |= sw.begin_node("")
        err |= sw.property_string("compatible", KHO_FDT_COMPATIBLE)
        perr, pmm_offset = sw.property_placeholder(PROP_PRESERVED_MEMORY_MAP, 8)
        err |= perr
        if not err:
            err = self.kho_preserve_folio(self.ser.fdt)
        if not err:
            err = notifier_to_errno(self._call_chain(KEXEC_KHO_FINALIZE, self.ser))
        if not err:
            err = self.kho_mem_serialize()
        if not err:
            sw.buf[pmm_offset:pmm_offset + 8] = struct.pack("<Q", self.ser.preserved_mem_map)
            err |= sw.end_node()
            err |= sw.finish()
        # The page holds whatever the writer produced, complete or not.
        self.k.physmem.write(self.ser.fdt.phys, bytes(sw.buf))
        self.ser.sw = None
        if err:
            self.k.printk.pr_err(f"KHO: Failed to convert KHO state tree: {err}")
            self.kho_abort()
        return err

    def kho_out_finalize_get(self) -> int:
        return int(self.finalized)

    def kho_out_finalize_set(self, _val: int) -> None:
        """The `finalize` attribute's write handler; errors surface as write(2)'s errno."""
        val = bool(_val)
        if val == self.finalized:
            ret = -errno.EEXIST if self.finalized else -errno.ENOENT
        else:
            ret = self.kho_finalize() if val else self.kho_abort()
            if not ret:
                self.finalized = val
                ret = self.kho_out_update_debugfs_fdt()
        if ret:
            # OR-ed libfdt codes reach user space as whatever errno they equal.
            raise OSError(-ret, os.strerror(-ret))

    # -- debugfs and initcall --

    def kho_out_debugfs_init(self) -> int:
        dfs = self.k.debugfs
        out = dfs.debugfs_create_dir("out", self.debugfs_root)
        self.ser.sub_fdt_dir = dfs.debugfs_create_dir("sub_fdts", out)
        dfs.debugfs_create_seq("scratch_phys", 0o400, out,
                               lambda: "".join(f"0x{s.addr:x}\n" for s in self.kho_scratch))
        dfs.debugfs_create_seq("scratch_len", 0o400, out,
                               lambda: "".join(f"0x{s.size:x}\n" for s in self.kho_scratch))
        dfs.debugfs_create_attr("finalize", 0o600, out, self.kho_out_finalize_get,
                                self.kho_out_finalize_set)
        self.out_dir = out
        return 0

    def kho_in_debugfs_init(self, fdt: bytes) -> int:
        dfs = self.k.debugfs
        self.kho_in_dir = dfs.debugfs_create_dir("in", self.debugfs_root)
        sub_fdt_dir = dfs.debugfs_create_dir("sub_fdts", self.kho_in_dir)
        err = self._debugfs_fdt_add(self.kho_in_fdt_list, self.kho_in_dir, "fdt", self.kho_in_fdt_phys)
        if err:
            dfs.debugfs_remove(self.kho_in_dir)
            return err
        for child in libfdt.fdt_for_each_subnode(fdt, 0):
            name = libfdt.fdt_get_name(fdt, child)
            value, length = libfdt.fdt_getprop(fdt, child, PROP_SUB_FDT)
            if value is None:
                continue
            if length != 8:
                self.k.printk.pr_warn(f"KHO: node `{name}`'s prop `fdt` has invalid length: {length}")
                continue
            err = self._debugfs_fdt_add(self.kho_in_fdt_list, sub_fdt_dir, name,
                                        struct.unpack("<Q", value)[0])
            if err:
                self.k.printk.pr_warn(f"KHO: failed to add fdt `{name}` to debugfs: {err}")
        return 0

    def kho_get_fdt(self) -> bytes | None:
        """The incoming root FDT, mapped (read) from RAM."""
        if not self.kho_in_fdt_phys:
            return None
        return self.map_fdt(self.kho_in_fdt_phys, PAGE_SIZE)

    def map_fdt(self, phys: int, length: int) -> bytes:
        """early_memremap(phys, length) as libfdt then uses it: it trusts the header's totalsize
        and reads past the mapped length, so the simulator maps what the header claims (at most
        FDT_MAP_MAX — a bound of its own so garbage cannot exhaust the host).  Outside RAM it
        reads what the bus answers, as a mapping there does."""
        fdt = read_phys(self.k.physmem, phys, min(length, FDT_MAP_MAX))
        total = libfdt.fdt_totalsize(fdt) if len(fdt) >= 8 else 0
        if total > len(fdt):
            fdt = read_phys(self.k.physmem, phys, min(total, FDT_MAP_MAX))
        return fdt

    def kho_init(self) -> int:
        """late_initcall: the root FDT page, debugfs, and (cold boot) scratch handed to CMA."""
        if not self.kho_enable:
            return 0
        folio = self.k.page_alloc.alloc_pages(0)
        if folio is None:
            self.kho_enable = False
            return -errno.ENOMEM
        self.ser.fdt = folio
        self.debugfs_root = self.k.debugfs.debugfs_create_dir("kho", None)
        self.kho_out_debugfs_init()
        fdt = self.kho_get_fdt()
        if fdt is not None:
            err = self.kho_in_debugfs_init(fdt)
            if err:
                self.k.printk.pr_err(f"KHO: failed exposing handover FDT in debugfs: {err}")
            return 0
        for area in self.kho_scratch:
            # init_cma_reserved_pageblock() per pageblock from the area's base: a size that is not
            # a multiple of 2 MiB (explicit lowmem/global sizes are not rounded) frees the whole
            # last pageblock, memory past the area included.
            start = PHYS_PFN(area.addr)
            end = start + round_up(area.size >> PAGE_SHIFT, pageblock_nr_pages)
            if PFN_PHYS(end) > area.addr + area.size:
                self.k.printk.pr_warn(
                    f"KHO: scratch 0x{area.addr:x}+0x{area.size:x} ends inside a pageblock [khofs: Linux "
                    f"frees whole pageblocks, so [0x{area.addr + area.size:x}-0x{PFN_PHYS(end):x}) goes "
                    "to the page allocator too, reserved or not]")
            self.k.page_alloc.set_pageblock_migratetype_cma(start, end)
            self.k.page_alloc.free_pages_memory(start, end)
        return 0

    # -- the incoming side --

    def kho_retrieve_subtree(self, name: str) -> tuple[int, int]:
        """(0, phys) or (-errno, 0)."""
        fdt = self.kho_get_fdt()
        if fdt is None:
            return -errno.ENOENT, 0
        offset = libfdt.fdt_subnode_offset(fdt, 0, name)
        if offset < 0:
            return -errno.ENOENT, 0
        value, length = libfdt.fdt_getprop(fdt, offset, PROP_SUB_FDT)
        if value is None or length != 8:
            return -errno.EINVAL, 0
        return 0, struct.unpack("<Q", value)[0]

    def kho_restore_folio(self, phys: int) -> Folio | None:
        pfn = PHYS_PFN(phys)
        if not self.k.pfn_to_online_page(pfn):
            return None
        private = self.k.page_alloc.page_private.get(pfn)
        if self.k.kver >= (6, 18):
            order, magic = private & 0xFFFFFFFF, private >> 32
            if magic != KHO_PAGE_MAGIC or order > MAX_PAGE_ORDER:
                return None
            self.k.page_alloc.page_private.set(pfn, 0)
        else:
            order = private
            if order > MAX_PAGE_ORDER:
                return None
        self.kho_check_preserved("restored folio", phys, PAGE_SIZE << order)
        return Folio(pfn, order)

    # -- the simulator's always-on loss check (Linux 6.16 has none) --

    def kho_check_preserved(self, what: str, phys: int, size: int) -> bool:
        """The one place a kernel that takes memory over from KHO asks whether it was handed over.

        Reviving a reserve_mem range or restoring a folio trusts that the previous kernel
        preserved it; Linux never checks, so memory the map does not cover has been freed
        (and, on a busy machine, overwritten) while its user carries on.  The check uses only
        what this kernel deserialized.  Claims made before the map is read (reserve_mem revives
        during command-line parsing) are checked once kho_memory_init has read it.  False and a
        khofs line when some of [phys, phys+size) is not covered or lies in scratch, which this
        kernel may have reused before it read the map.
        """
        if self._pending_claims is not None:
            self._pending_claims.append((what, phys, size))
            return True
        problem = self._kho_map_problem(phys, size)
        if self.k.kho_sanitizer is not None:     # the sanitizer reports this check too, in its voice
            return self.k.kho_sanitizer.claim(self.k.printk, what, phys, size, problem)
        if problem is None:
            return True
        where = f"{what} [mem {phys:#018x}-{phys + size - 1:#018x}]"
        self.k.printk.pr_warn(f"KHO: {where} {problem}; its contents are lost [khofs: not checked by Linux]")
        return False

    def _kho_map_problem(self, phys: int, size: int) -> str | None:
        """Why [phys, phys+size) was not handed over by the map this kernel read, or None."""
        gap = self.kho_preserved_gap(phys, size)
        if gap is not None:
            return f"is not in the preserved memory map from {gap:#x} on"
        area = next((a for a in self.kho_scratch
                     if a.addr < phys + size and phys < a.addr + a.size), None)
        if area is None:
            return None
        # Preserved, but scratch is this kernel's to use from its first allocation.
        return f"lies in scratch [mem {area.addr:#018x}-{area.addr + area.size - 1:#018x}]"

    def kho_preserved_gap(self, phys: int, size: int) -> int | None:
        """The first address of [phys, phys+size) that no deserialized preservation covers, or None.

        kho_mem_deserialize leaves every preserved block reserved and marked RSRV_NOINIT in
        memblock, so the reserved regions carrying that flag are the map as this kernel read it.
        """
        mb = self.k.memblock
        regions = mb.reserved.regions
        cur, end = phys, phys + size
        i = mb.search(mb.reserved, cur) if mb.reserved.cnt else -1
        while cur < end:
            if i < 0 or i >= mb.reserved.cnt:
                return cur
            r = regions[i]
            if r.base > cur or not r.flags & MEMBLOCK_RSRV_NOINIT:
                return cur
            cur = r.base + r.size
            i += 1
        return None

    def kho_populate(self, fdt_phys: int, fdt_len: int, scratch_phys: int, scratch_len: int) -> None:
        """Called by each architecture's transport (x86 setup_data, arm64 /chosen) early in setup_arch."""
        err = self._kho_populate(fdt_phys, fdt_len, scratch_phys, scratch_len)
        if err:
            self.k.printk.pr_warn(f"KHO: disabling KHO revival: {err}")

    def _kho_populate(self, fdt_phys: int, fdt_len: int, scratch_phys: int, scratch_len: int) -> int:
        printk = self.k.printk
        physmem = self.k.physmem
        if early_memremap(physmem, printk, fdt_phys, fdt_len) is None:
            printk.pr_warn(f"KHO: setup: failed to memremap FDT (0x{fdt_phys:x})")
            return -errno.EFAULT
        fdt = self.map_fdt(fdt_phys, fdt_len)
        err = libfdt.fdt_check_header(fdt)
        if err:
            printk.pr_warn(f"KHO: setup: handover FDT (0x{fdt_phys:x}) is invalid: {err}")
            return -errno.EINVAL
        err = libfdt.fdt_node_check_compatible(fdt, 0, KHO_FDT_COMPATIBLE)
        if err:
            printk.pr_warn(f"KHO: setup: handover FDT (0x{fdt_phys:x}) is incompatible with "
                           f"'{KHO_FDT_COMPATIBLE}': {err}")
            return -errno.EINVAL
        raw = early_memremap(physmem, printk, scratch_phys, scratch_len)
        if raw is None:
            printk.pr_warn(f"KHO: setup: failed to memremap scratch (phys=0x{scratch_phys:x}, "
                           f"len={_lld(scratch_len)})")
            return -errno.EFAULT
        areas = _unpack_scratch(raw)
        problem = self.kho_validate_scratch(areas) or self.kho_validate_mem_map(fdt, areas)
        if problem:
            printk.pr_warn(f"KHO: setup: {problem} [khofs: not checked by Linux]")
            return -errno.EINVAL
        mb = self.k.memblock
        for area in areas:
            addr, size = area.addr, area.size
            mb.add(addr, size)
            err = mb.mark_kho_scratch(addr, size)
            # %pa prints its own 0x after the format's: the kernel logs 0x0x...
            if err:
                printk.pr_warn(f"KHO: failed to mark the scratch region 0x{addr:#018x}+0x{size:#018x}: {err}")
                return err
            printk.pr_debug(f"KHO: Marked 0x{addr:#018x}+0x{size:#018x} as scratch")
        mb.reserve(scratch_phys, scratch_len)
        mb.set_kho_scratch_only()
        self.kho_in_fdt_phys = fdt_phys
        self.kho_in_scratch_phys = scratch_phys
        self.kho_scratch_cnt = scratch_len // KHO_SCRATCH_SIZE
        printk.pr_info("KHO: found kexec handover data. Will skip init for some devices")
        return 0

    def kho_validate_scratch(self, areas: list[KhoScratch]) -> str:
        """The simulator's check of the incoming scratch array; "" means usable.

        Linux adds every entry to memblock as RAM and then allocates only from them: an
        entry beyond the machine's memory or overlapping another is memory that is not there
        or is used twice, and no scratch at all leaves early boot nothing to allocate from.
        """
        used = sorted((a.addr, a.addr + a.size) for a in areas if a.size)
        if not used:
            return "scratch array has no scratch memory"
        prev_end = 0
        for start, end in used:
            name = f"scratch area 0x{start:x}+0x{end - start:x}"
            if end > self.k.physmem.size:
                return f"{name} is outside RAM"
            if start < prev_end:
                return f"{name} overlaps another scratch area"
            prev_end = end
        return ""

    def kho_validate_mem_map(self, fdt: bytes, scratch: list[KhoScratch]) -> str:
        """The simulator's own check of the whole chunk list before anything is revived.

        Linux 6.16 trusts the list and would crash or half-revive on a corrupt one; the
        simulator refuses it up front instead (a documented divergence).  "" means valid.
        """
        value, length = libfdt.fdt_getprop(fdt, 0, PROP_PRESERVED_MEMORY_MAP)
        if value is None or length != 8:
            return ""          # Linux itself reports this later, in kho_mem_deserialize
        nbytes = self.preserve_bits // 8
        try:
            for chunk, _bits in kho_mem_chunks_checked(self.k.physmem.read, struct.unpack("<Q", value)[0],
                                                       self.preserve_bits, self.k.physmem.size):
                area = _in_scratch(chunk.phys, PAGE_SIZE, scratch)
                if area:
                    return f"preserved memory map chunk 0x{chunk.phys:x} lies in {area}"
                for _phys_start, bitmap in chunk.bitmaps:
                    area = _in_scratch(bitmap, nbytes, scratch)
                    if area:
                        return f"preserved memory bitmap 0x{bitmap:x} lies in {area}"
        except KhoMemMapError as e:
            return str(e)
        return ""

    def kho_release_scratch(self) -> None:
        """Scratch pageblocks become MIGRATE_CMA before memblock frees them."""
        for region in self.k.memblock.memory.regions:
            if region.flags & MEMBLOCK_KHO_SCRATCH:
                self.k.page_alloc.set_pageblock_migratetype_cma(
                    PFN_DOWN(region.base), PFN_UP(region.base + region.size))

    def deserialize_bitmap(self, order: int, phys_start: int, bitmap: int, bases: array,
                           sizes: array) -> None:
        """Queue memblock_reserve + memblock_reserved_mark_noinit of each set bit's block, in bit
        order, and set its page->private (the order; 6.18 adds KHO_PAGE_MAGIC).

        Linux 6.16 computes the size as `int sz = 1 << (order + PAGE_SHIFT)` (6.18 still does):
        order 19 makes it INT_MIN, which memblock_reserve's phys_addr_t sign-extends, so the
        reservation runs to PHYS_ADDR_MAX; order 20 and up shift past 31 bits, which x86 takes
        modulo 32.  The simulator reserves what that code does and says so.
        """
        bits = _set_bits(int.from_bytes(self.k.physmem.read(bitmap, self.preserve_bits // 8), "little"))
        if not bits:
            return
        shift = order + PAGE_SHIFT
        sz = _int_sz(shift)
        if sz != 1 << shift:
            self.k.printk.pr_warn(f"KHO: deserialize_bitmap: order {order}: int sz = 1 << {shift} "
                                  f"is 0x{sz:x}, so {len(bits)} block(s) from 0x{phys_start:x} get "
                                  f"that size [khofs: Linux 6.16 bug]")
        start = len(bases)
        bases.extend(phys_start + (bit << shift) & U64_MAX for bit in bits)
        sizes.extend(repeat(sz, len(bits)))
        private = order | (KHO_PAGE_MAGIC << 32) if self.k.kver >= (6, 18) else order
        self.k.page_alloc.page_private.set_many((phys >> PAGE_SHIFT for phys in bases[start:]), private)

    def kho_mem_deserialize(self, fdt: bytes) -> None:
        value, length = libfdt.fdt_getprop(fdt, 0, PROP_PRESERVED_MEMORY_MAP)
        if value is None or length != 8:
            self.k.printk.pr_err("KHO: failed to get preserved memory bitmaps")
            return
        bases, sizes = array("Q"), array("Q")
        for chunk in kho_mem_chunks(self.k.physmem.read, struct.unpack("<Q", value)[0]):
            for phys_start, bitmap in chunk.bitmaps:
                self.deserialize_bitmap(chunk.order, phys_start, bitmap, bases, sizes)
        self.k.memblock.reserve_mark_noinit_many(bases, sizes)

    def kho_memory_init(self) -> None:
        """mm_core_init hook: revive on a KHO boot, reserve fresh scratch otherwise."""
        claims, self._pending_claims = self._pending_claims or [], None
        if not self.kho_in_scratch_phys:
            self.kho_reserve_scratch()
            return
        self.kho_scratch_phys = self.kho_in_scratch_phys
        self.kho_release_scratch()
        fdt = self.kho_get_fdt()
        assert fdt is not None
        self.kho_mem_deserialize(fdt)
        if self.k.kho_sanitizer is not None:
            value, length = libfdt.fdt_getprop(fdt, 0, PROP_PRESERVED_MEMORY_MAP)
            first = int.from_bytes(value, "little") if value is not None and length == 8 else None
            self.k.kho_sanitizer.kho_boot(self.k.printk, self.k.physmem, first, self.preserve_bits)
        for what, phys, size in claims:
            self.kho_check_preserved(what, phys, size)
        if self.kho_restore_folio(self.kho_in_fdt_phys) is None:
            self.k.printk.pr_warn("KHO: failed to restore folio for KHO fdt")

    # -- kexec_file_load helpers --

    def kho_fill_kimage(self, image: Kimage) -> int:
        if not self.kho_enable:
            return 0
        if self.k.kver >= (6, 17) and not self.finalized:
            return 0
        assert self.ser.fdt is not None
        image.kho_fdt = self.ser.fdt.phys
        size = KHO_SCRATCH_SIZE * self.kho_scratch_cnt
        kbuf = KexecBuf(image=image, buffer=self.k.physmem.read(self.kho_scratch_phys, size),
                        bufsz=size, mem=KEXEC_BUF_MEM_UNKNOWN, memsz=size, buf_align=SZ_64K,
                        buf_max=ULONG_MAX, top_down=True)
        err = kexec_add_buffer(kbuf)
        if err:
            return err
        image.kho_scratch = image.segments[-1]
        return 0

    def kho_locate_mem_hole(self, kbuf: KexecBuf, func: Callable[[int, int, KexecBuf], int]) -> int:
        if not self.kho_enable or kbuf.image.is_crash:
            return 1
        ret = 0
        for area in self.kho_scratch:
            ret = func(area.addr, area.addr + area.size - 1, kbuf)
            if ret:
                break
        return 0 if ret == 1 else -errno.EADDRNOTAVAIL


def _set_bits(word: int) -> list[int]:
    """The set bits of a bitmap, lowest first (for_each_set_bit's order)."""
    bits = []
    while word:
        low = word & -word
        bits.append(low.bit_length() - 1)
        word ^= low
    return bits


def _int_sz(shift: int) -> int:
    """`int sz = 1 << shift` on x86-64 as a phys_addr_t: the shift count is taken modulo 32
    and bit 31 is the sign, which the conversion to u64 extends."""
    sz = 1 << (shift & 31)
    return sz | (U64_MAX ^ 0xFFFFFFFF) if sz == 1 << 31 else sz


def _bad_chunk_addr(chunk: int, ram_size: int) -> str:
    """Why the simulator refuses to read a chunk at `chunk` ("" when it may)."""
    if chunk % PAGE_SIZE or chunk + PAGE_SIZE > ram_size:
        return f"preserved memory map chunk 0x{chunk:x} is outside RAM or misaligned"
    return ""


def _in_scratch(phys: int, size: int, scratch: list[KhoScratch]) -> str:
    """Names the scratch area [phys, phys+size) overlaps, or "".

    The chunk list and its bitmaps are read only in mm_core_init, after the new kernel
    has been allocating from scratch: there they are overwritten before they are read.
    """
    for a in scratch:
        if a.size and a.addr < phys + size and phys < a.addr + a.size:
            return f"scratch area 0x{a.addr:x}+0x{a.size:x}"
    return ""


def _lld(value: int) -> int:
    """%lld of a u64."""
    return value - (1 << 64) if value >= 1 << 63 else value


# -- 6.18: vmalloc preservation (struct kho_vmalloc / kho_vmalloc_chunk) --

KHO_VMALLOC_ALLOC = 0x1
KHO_VMALLOC_SIZE = (PAGE_SIZE - 8) // 8      # 511 page addresses per chunk


def kho_preserve_vmalloc(kho: KexecHandover, data: bytes) -> tuple[int, bytes]:
    """vmalloc() `data` into order-0 pages, preserve them and their chunk list.

    Returns (err, the 16-byte struct kho_vmalloc to store in an FDT).
    """
    k = kho.k
    nr_pages = max(1, -(-len(data) // PAGE_SIZE))
    pages: list[Folio] = []
    for i in range(nr_pages):
        folio = k.page_alloc.alloc_pages(0)
        if folio is None:
            return -errno.ENOMEM, b""
        k.physmem.write(folio.phys, data[i * PAGE_SIZE:(i + 1) * PAGE_SIZE].ljust(PAGE_SIZE, b"\0"))
        pages.append(folio)

    def new_chunk(prev: int) -> int:
        folio = k.page_alloc.alloc_pages(0)
        if folio is None:
            return 0
        k.physmem.fill(folio.phys, PAGE_SIZE, 0)
        if kho.kho_preserve_pages(folio.pfn, 1):
            return 0
        if prev:
            k.physmem.write_u64(prev, folio.phys)
        return folio.phys

    first = chunk = new_chunk(0)
    if not chunk:
        return -errno.ENOMEM, b""
    idx = 0
    for page in pages:
        err = kho.kho_preserve_pages(page.pfn, 1)
        if err:
            return err, b""
        k.physmem.write_u64(chunk + 8 + idx * 8, page.phys)
        idx += 1
        if idx == KHO_VMALLOC_SIZE:
            chunk = new_chunk(chunk)
            if not chunk:
                return -errno.ENOMEM, b""
            idx = 0
    return 0, struct.pack("<QIHH", first, nr_pages, KHO_VMALLOC_ALLOC, 0)


def kho_restore_vmalloc(kho: KexecHandover, preservation: bytes) -> bytes | None:
    """Restore the pages a kho_vmalloc describes; their contents in order, or None."""
    first, total_pages, _flags, order = struct.unpack("<QIHH", preservation)
    k = kho.k
    out = bytearray()
    chunk, seen = first, set()
    while chunk and len(out) < total_pages * PAGE_SIZE:
        if chunk in seen or kho.kho_restore_folio(chunk) is None:
            return None                 # a chunk list that loops would hang Linux: refused
        seen.add(chunk)
        page = k.physmem.read(chunk, PAGE_SIZE)
        for i in range(KHO_VMALLOC_SIZE):
            phys = struct.unpack_from("<Q", page, 8 + i * 8)[0]
            if not phys or len(out) >= total_pages * PAGE_SIZE:
                break
            # idx + contig_pages > total_pages, and pages past RAM are not online.
            size = PAGE_SIZE << order
            if len(out) + size > total_pages * PAGE_SIZE or phys + size > k.physmem.size:
                return None
            if kho.kho_restore_folio(phys) is None:
                return None
            out += k.physmem.read(phys, size)
        chunk = struct.unpack_from("<Q", page, 0)[0]
    return bytes(out) if len(out) == total_pages * PAGE_SIZE else None
