"""Shared helpers of the KHO hand-over suites (test_kexec_handover, test_kho_in, test_kernel_618,
test_honesty).

Everything here decodes what the kernel left in simulated RAM or printed, with the
layouts of spec/kho.md (§2 root FDT, §4.2 chunk list, §5 scratch array, §7 kho_data),
independently of the simulator's own decoders, so a test compares the simulator with
the spec rather than with itself.
"""

import random
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fdt as pyfdt
import libfdt  # pylibfdt: the kexec DT carries NOP tags (the boot's rng-seed) `fdt` rejects
import pytest

from sim.arch import make_kernel_image
from sim.init.main import Kernel
from sim.machine import Machine
from sim.physmem import PhysMem

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_PAGE_ORDER = 10
KEXEC_FILE_NO_INITRAMFS = 0x4
SETUP_RNG_SEED = 9
SETUP_KEXEC_KHO = 10
POISON = 0xAA                       # the scrubbing machine's PAGE_POISON byte

# The reference machine and command line (issue 4 "Done when").
CMDLINE = "kho=on kho_scratch=16M,512M,256M reserve_mem=64m:4k:n1"
# scratch_len for that command line on 8G/2 nodes: lowmem, global, one per node (spec §5).
SCRATCH_LEN = [16 << 20, 512 << 20, 256 << 20, 256 << 20]

DISABLING = "KHO: disabling KHO revival: -22"
FOUND = "KHO: found kexec handover data. Will skip init for some devices"


# The KHO suites run once per architecture, as the memblock suites run both directions: a module
# that says `pytestmark = pytest.mark.usefixtures("arch")` (and imports `arch`) gets each test twice,
# and a test about one architecture's transport pins it with `@only("x86_64")`.
ARCHES = ("x86_64", "arm64")
_ARCH = ["x86_64"]


@pytest.fixture(params=ARCHES)
def arch(request: pytest.FixtureRequest) -> Iterator[str]:
    """The architecture `boot()` and `machine()` build for this test."""
    _ARCH[0] = request.param
    yield request.param
    _ARCH[0] = "x86_64"


def only(arch_name: str) -> pytest.MarkDecorator:
    """For a test of one architecture's own hand-over (x86 setup_data, arm64 /chosen)."""
    return pytest.mark.parametrize("arch", [arch_name], indirect=True)


def current_arch() -> str:
    return _ARCH[0]


def machine(**kw: object) -> Machine:
    """Machine(**kw) of the architecture under test."""
    return Machine(arch=current_arch(), **kw)  # type: ignore[arg-type]


def boot(cmdline: str = CMDLINE, version: str = "6.16", test_kho: bool = False, scrub: bool = True,
         mem: str = "8G", nodes: int = 2, seed: int = 0) -> tuple[Machine, Kernel]:
    m = machine(mem=mem, nodes=nodes, cmdline=cmdline, kernel_version=version, scrub=scrub,
                test_kho=test_kho, seed=seed)
    return m, m.boot()


def make_image(version: str = "6.16", cmdline: str = "", arch: str | None = None) -> bytes:
    """A kernel image of the architecture under test (a bzImage or an arm64 Image)."""
    return make_kernel_image(arch or current_arch(), version, cmdline)


def finalize(k: Kernel) -> None:
    k.debugfs.write("kho/out/finalize", b"1\n")


def load(k: Kernel, version: str | None = None, cmdline: str | None = None,
         initrd: bytes | None = None) -> None:
    """`kexec -s` (kexec_file_load), reusing the running command line unless told otherwise."""
    image = make_kernel_image(k.machine.arch, version or k.info.version)
    flags = 0 if initrd else KEXEC_FILE_NO_INITRAMFS
    k.kexec_file_load(image, initrd, k.cmdline if cmdline is None else cmdline, flags)


def kexec(m: Machine, version: str | None = None, cmdline: str | None = None) -> Kernel:
    """Load the next kernel into the running one and `kexec -e` into it."""
    assert m.kernel is not None
    load(m.kernel, version, cmdline)
    return m.kexec()


def log(k: Kernel) -> list[str]:
    """dmesg lines without their timestamps."""
    return [line.split("] ", 1)[1] for line in k.dmesg().splitlines()]


def kho_lines(k: Kernel) -> list[str]:
    """The lines a KHO hand-over (or its failure) prints: `KHO: ` ones and the unprefixed memblock ones."""
    keys = ("KHO", "Revived memory reservation", "FDT 'memblock'", "reserve-mem", "test_kho")
    return [line for line in log(k) if any(key in line for key in keys)]


def random_bytes(n: int, seed: int = 1) -> bytes:
    """A reproducible random pattern (a failing run can be replayed)."""
    return random.Random(seed).randbytes(n)


def hexlines(k: Kernel, path: str) -> list[int]:
    """A `0x%llx\\n`-per-line seq file (kho/out/scratch_phys, scratch_len) as ints."""
    text = k.debugfs.read(path).decode()
    assert re.fullmatch(r"(0x[0-9a-f]+\n)*", text), text
    return [int(x, 16) for x in text.split()]


def scratch_areas(k: Kernel) -> list[tuple[int, int]]:
    """[start, end) of each kho_scratch[] entry, as debugfs shows them."""
    return [(a, a + s) for a, s in zip(hexlines(k, "kho/out/scratch_phys"),
                                        hexlines(k, "kho/out/scratch_len"), strict=True)]


def inside_any(start: int, end: int, areas: list[tuple[int, int]]) -> bool:
    return any(a <= start and end <= b for a, b in areas)


@dataclass(frozen=True)
class Region:
    """One line of memblock/memory or memblock/reserved: `%4d: %pa..%pa %4d %s`."""

    base: int
    end: int                 # exclusive
    nid: str
    flag: str


_REGION = re.compile(r"\s*(\d+): 0x([0-9a-f]{16})\.\.0x([0-9a-f]{16})\s+(\S+) (\S+)")


def regions(k: Kernel, which: str) -> list[Region]:
    out = []
    for line in k.debugfs.read(f"memblock/{which}").decode().splitlines():
        mt = _REGION.fullmatch(line)
        assert mt, line
        out.append(Region(int(mt[2], 16), int(mt[3], 16) + 1, mt[4], mt[5]))
    return out


def union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge [start, end) ranges into sorted disjoint ones."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def greedy_split(phys: int, size: int) -> set[tuple[int, int]]:
    """kho_preserve_phys's walk (spec §4.1): (phys, order) blocks, orders may exceed 10."""
    pfn, end = phys >> PAGE_SHIFT, (phys + size) >> PAGE_SHIFT
    out = set()
    while pfn < end:
        ctz = (pfn & -pfn).bit_length() - 1 if pfn else 64
        order = min(ctz, (end - pfn).bit_length() - 1)
        out.add((pfn << PAGE_SHIFT, order))
        pfn += 1 << order
    return out


@dataclass(frozen=True)
class Chunk:
    phys: int
    next: int
    order: int
    elms: tuple[tuple[int, int], ...]     # (phys_start, bitmap phys)


def read_chunks(physmem: PhysMem, first: int) -> list[Chunk]:
    """The preserved-memory-map linked list (spec §4.2), read straight from RAM."""
    out = []
    while first:
        assert len(out) < 4096, "chunk list does not end"
        page = physmem.read(first, PAGE_SIZE)
        nxt, order, num = struct.unpack_from("<QII", page)
        elms = tuple(struct.unpack_from("<QQ", page, 16 + 16 * i) for i in range(num))
        out.append(Chunk(first, nxt, order, elms))
        first = nxt
    return out


def preserved_blocks(physmem: PhysMem, first: int, preserve_bits: int) -> set[tuple[int, int]]:
    """Every (phys, order) a set bit of the chunk list stands for."""
    blocks = set()
    for chunk in read_chunks(physmem, first):
        for phys_start, bitmap in chunk.elms:
            bits = int.from_bytes(physmem.read(bitmap, preserve_bits // 8), "little")
            while bits:
                b = (bits & -bits).bit_length() - 1
                bits &= bits - 1
                blocks.add((phys_start + (b << (chunk.order + PAGE_SHIFT)), chunk.order))
    return blocks


def block_ranges(blocks: set[tuple[int, int]]) -> list[tuple[int, int]]:
    return union([(p, p + (PAGE_SIZE << o)) for p, o in blocks])


def dt(blob: bytes) -> pyfdt.FDT:
    return pyfdt.parse_dtb(blob)


def prop_bytes(blob: bytes, path: str, name: str) -> bytes:
    """A property's raw value, rebuilt from the `fdt` package's BE-word view."""
    prop = dt(blob).get_property(name, path)
    if isinstance(prop, pyfdt.PropWords):
        return b"".join(struct.pack(">I", w) for w in prop.data)
    if isinstance(prop, pyfdt.PropBytes):
        return bytes(prop.data)
    if isinstance(prop, pyfdt.PropStrings):
        return b"".join(s.encode() + b"\0" for s in prop.data)
    raise AssertionError(f"{path}:{name} is {type(prop).__name__}")


def prop_u64(blob: bytes, path: str, name: str) -> int:
    """KHO integer properties are native-endian (LE) u64 (spec §2 Encoding)."""
    raw = prop_bytes(blob, path, name)
    assert len(raw) == 8, (path, name, raw)
    return struct.unpack("<Q", raw)[0]


def totalsize(physmem: PhysMem, phys: int) -> int:
    return struct.unpack(">I", physmem.read(phys + 4, 4))[0]


@dataclass(frozen=True)
class SetupData:
    phys: int
    type: int
    len: int
    payload: bytes


def image_reader(k: Kernel) -> Callable[[int, int], bytes]:
    """Read the destination address space of the loaded kexec image (what machine_kexec will write).

    The next kernel frees the zero page once it has copied it, so a scrubbing machine
    poisons it; the loaded segments are the faithful record of what was handed over.
    """
    image = k.kexec.kexec_image
    assert image is not None
    segs = [(s.mem, s.buffer[:s.bufsz].ljust(s.memsz, b"\0")) for s in image.segments]

    def read(phys: int, n: int) -> bytes:
        for mem, buf in segs:
            if mem <= phys and phys + n <= mem + len(buf):
                return buf[phys - mem:phys - mem + n]
        raise AssertionError(f"{phys:#x}+{n:#x} is in no segment")
    return read


def boot_params_addr(k: Kernel) -> int:
    image = k.kexec.kexec_image
    assert image is not None
    return image.bootparam_load_addr


def setup_data(read: Callable[[int, int], bytes], boot_params: int) -> list[SetupData]:
    """The x86 setup_data list (boot_params.hdr.setup_data at 0x250), entries as written."""
    pa = struct.unpack("<Q", read(boot_params + 0x250, 8))[0]
    out = []
    while pa:
        assert len(out) < 16
        nxt, type_, length = struct.unpack("<QII", read(pa, 16))
        out.append(SetupData(pa, type_, length, read(pa + 16, length)))
        pa = nxt
    return out


# Segments of a loaded image without KHO and without an initrd: x86 purgatory, boot_params and kernel;
# arm64 kernel and DTB.  KHO adds the scratch array, an initrd one more.
BASE_SEGMENTS = {"x86_64": 3, "arm64": 2}


def _dtb_segment(k: Kernel) -> tuple[int, bytes]:
    image = k.kexec.kexec_image
    assert image is not None
    seg = next(s for s in image.segments if s.mem == image.arch.dtb_mem)
    return seg.mem, seg.buffer[:seg.bufsz]


def handover(k: Kernel) -> tuple[int, int, int, int] | None:
    """(fdt, fdt size, scratch array, its size) the loaded image hands over, as the architecture's
    transport carries it: x86 SETUP_KEXEC_KHO, arm64 /chosen linux,kho-fdt and linux,kho-scratch."""
    if k.machine.arch == "x86_64":
        return kho_data(image_reader(k), boot_params_addr(k))
    tree = libfdt.Fdt(_dtb_segment(k)[1])
    chosen = tree.path_offset("/chosen")
    props = [tree.getprop(chosen, name, quiet=(libfdt.NOTFOUND,))
             for name in ("linux,kho-fdt", "linux,kho-scratch")]
    if isinstance(props[0], int):       # -NOTFOUND: the image hands nothing over
        return None
    (fdt_addr, fdt_size), (scratch, scratch_size) = (struct.unpack(">QQ", bytes(p)) for p in props)
    return fdt_addr, fdt_size, scratch, scratch_size


def patch_kho_setup_data(k: Kernel, offset: int, data: bytes) -> int:
    """Rewrite bytes of the loaded image's SETUP_KEXEC_KHO entry (offset from its header); returns phys."""
    image = k.kexec.kexec_image
    assert image is not None
    seg = next(s for s in image.segments if s.mem == image.bootparam_load_addr)
    entry = next(e for e in setup_data(image_reader(k), seg.mem) if e.type == SETUP_KEXEC_KHO)
    buf = bytearray(seg.buffer)
    at = entry.phys - seg.mem + offset
    buf[at:at + len(data)] = data
    seg.buffer = bytes(buf)
    return entry.phys


def patch_handover(k: Kernel, which: str, addr: int) -> None:
    """Point the loaded image's hand-over at another address ("fdt" or "scratch") where its
    transport keeps it; sizes stay as they are."""
    if k.machine.arch == "x86_64":
        patch_kho_setup_data(k, 16 + (0 if which == "fdt" else 16), struct.pack("<Q", addr))
        return
    mem, blob = _dtb_segment(k)
    tree = libfdt.Fdt(bytearray(blob))
    name = "linux,kho-fdt" if which == "fdt" else "linux,kho-scratch"
    node = tree.path_offset("/chosen")
    old = bytes(tree.getprop(node, name))
    tree.setprop(node, name, struct.pack(">Q", addr) + old[8:])
    image = k.kexec.kexec_image
    assert image is not None
    seg = next(s for s in image.segments if s.mem == mem)
    seg.buffer = bytes(tree.as_bytearray()) + seg.buffer[seg.bufsz:]


def kho_data(read: Callable[[int, int], bytes], boot_params: int) -> tuple[int, int, int, int] | None:
    """struct kho_data (fdt_addr, fdt_size, scratch_addr, scratch_size) of SETUP_KEXEC_KHO, if linked."""
    for sd in setup_data(read, boot_params):
        if sd.type == SETUP_KEXEC_KHO:
            assert sd.len == 32
            return struct.unpack("<QQQQ", sd.payload)
    return None
