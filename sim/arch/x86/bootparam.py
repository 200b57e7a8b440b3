"""arch/x86/include/uapi/asm/bootparam.h: struct boot_params, its e820 map and the setup_data list.

This is the one channel, besides RAM contents, through which a boot loader or
an old kernel (kexec) tells a new kernel anything.  It is kept as bytes at the
offsets of arch/x86/include/uapi/asm/bootparam.h so that the new kernel reads
exactly what was written, and a `hexdump` of the page looks like Linux's.

setup_data walking and the simulator's one divergence
-----------------------------------------------------
Linux's ``parse_setup_data()`` follows ``next`` links with no cycle check and
no bound: a cyclic list hangs the boot, a link into nowhere reads whatever
``early_memremap`` maps there.  A simulator that hangs is useless for the
engineer debugging such a list, so `walk_setup_data` stops **silently** at the
first link that revisits an entry, points outside simulated RAM, or exceeds
`SETUP_DATA_WALK_MAX` entries.  No log line is printed (a real kernel would not
print one either; it would hang), so the divergence is visible only as "the
walk ended early".  Unknown types are yielded like known ones: the caller
ignores them, as ``parse_setup_data()`` does.
"""

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from sim.physmem import PhysMem

# setup_data types (arch/x86/include/uapi/asm/setup_data.h, 6.16).
SETUP_NONE = 0
SETUP_E820_EXT = 1
SETUP_DTB = 2
SETUP_PCI = 3
SETUP_EFI = 4
SETUP_APPLE_PROPERTIES = 5
SETUP_JAILHOUSE = 6
SETUP_CC_BLOB = 7
SETUP_IMA = 8
SETUP_RNG_SEED = 9
SETUP_KEXEC_KHO = 10
SETUP_ENUM_MAX = SETUP_KEXEC_KHO
SETUP_INDIRECT = 1 << 31
SETUP_TYPE_MAX = SETUP_ENUM_MAX | SETUP_INDIRECT

# e820 types (arch/x86/include/asm/e820/types.h).
E820_TYPE_RAM = 1
E820_TYPE_RESERVED = 2
E820_TYPE_ACPI = 3
E820_TYPE_NVS = 4
E820_TYPE_UNUSABLE = 5
E820_TYPE_PMEM = 7
E820_TYPE_PRAM = 12
E820_TYPE_SOFT_RESERVED = 0xEFFFFFFF
E820_TYPE_RESERVED_KERN = 128

# loadflags / xloadflags.
LOADED_HIGH = 1 << 0
KASLR_FLAG = 1 << 1
QUIET_FLAG = 1 << 5
KEEP_SEGMENTS = 1 << 6
CAN_USE_HEAP = 1 << 7
XLF_KERNEL_64 = 1 << 0
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1
XLF_EFI_HANDOVER_32 = 1 << 2
XLF_EFI_HANDOVER_64 = 1 << 3
XLF_EFI_KEXEC = 1 << 4
XLF_5LEVEL = 1 << 5
XLF_5LEVEL_ENABLED = 1 << 6

# Sizes and offsets of the zero page.
BOOT_PARAMS_SIZE = 4096
SETUP_HEADER_OFFSET = 0x1F1
SETUP_HEADER_END = 0x26C          # one past kernel_info_offset (boot protocol 2.15)
E820_ENTRIES_OFFSET = 0x1E8
E820_TABLE_OFFSET = 0x2D0
E820_MAX_ENTRIES_ZEROPAGE = 128
E820_ENTRY_SIZE = 20
HDRS_MAGIC = b"HdrS"
BOOT_FLAG_MAGIC = 0xAA55
# x86 COMMAND_LINE_SIZE; the setup header advertises cmdline_size = COMMAND_LINE_SIZE - 1.
COMMAND_LINE_SIZE = 2048

SETUP_DATA_HDR_SIZE = 16
KHO_DATA_SIZE = 32
# Simulator-only bound on a setup_data walk (see the module docstring).
SETUP_DATA_WALK_MAX = 1 << 16


@dataclass(frozen=True)
class E820Entry:
    """struct boot_e820_entry: 20 packed bytes, [addr, addr + size) of one type."""

    addr: int
    size: int
    type: int

    def pack(self) -> bytes:
        return struct.pack("<QQI", self.addr, self.size, self.type)

    @classmethod
    def unpack(cls, data: bytes) -> "E820Entry":
        return cls(*struct.unpack("<QQI", data[:E820_ENTRY_SIZE]))


# Field name -> (offset in boot_params, struct format).  Every setup_header field is
# listed so that copying the header from an image and back loses nothing.
_FIELDS: dict[str, tuple[int, str]] = {
    # outside the setup header
    "ext_mem_k": (0x002, "<H"),          # screen_info.ext_mem_k
    "acpi_rsdp_addr": (0x070, "<Q"),
    "ext_ramdisk_image": (0x0C0, "<I"),
    "ext_ramdisk_size": (0x0C4, "<I"),
    "ext_cmd_line_ptr": (0x0C8, "<I"),
    "alt_mem_k": (0x1E0, "<I"),
    "e820_entries": (0x1E8, "<B"),
    "secure_boot": (0x1EC, "<B"),
    "sentinel": (0x1EF, "<B"),
    # struct setup_header at 0x1f1
    "setup_sects": (0x1F1, "<B"),
    "root_flags": (0x1F2, "<H"),
    "syssize": (0x1F4, "<I"),
    "ram_size": (0x1F8, "<H"),
    "vid_mode": (0x1FA, "<H"),
    "root_dev": (0x1FC, "<H"),
    "boot_flag": (0x1FE, "<H"),
    "jump": (0x200, "<H"),
    "header": (0x202, "4s"),
    "version": (0x206, "<H"),
    "realmode_swtch": (0x208, "<I"),
    "start_sys_seg": (0x20C, "<H"),
    "kernel_version": (0x20E, "<H"),
    "type_of_loader": (0x210, "<B"),
    "loadflags": (0x211, "<B"),
    "setup_move_size": (0x212, "<H"),
    "code32_start": (0x214, "<I"),
    "ramdisk_image": (0x218, "<I"),
    "ramdisk_size": (0x21C, "<I"),
    "bootsect_kludge": (0x220, "<I"),
    "heap_end_ptr": (0x224, "<H"),
    "ext_loader_ver": (0x226, "<B"),
    "ext_loader_type": (0x227, "<B"),
    "cmd_line_ptr": (0x228, "<I"),
    "initrd_addr_max": (0x22C, "<I"),
    "kernel_alignment": (0x230, "<I"),
    "relocatable_kernel": (0x234, "<B"),
    "min_alignment": (0x235, "<B"),
    "xloadflags": (0x236, "<H"),
    "cmdline_size": (0x238, "<I"),
    "hardware_subarch": (0x23C, "<I"),
    "hardware_subarch_data": (0x240, "<Q"),
    "payload_offset": (0x248, "<I"),
    "payload_length": (0x24C, "<I"),
    "setup_data": (0x250, "<Q"),
    "pref_address": (0x258, "<Q"),
    "init_size": (0x260, "<I"),
    "handover_offset": (0x264, "<I"),
    "kernel_info_offset": (0x268, "<I"),
}


@dataclass
class BootParams:
    """struct boot_params with the fields the boot path uses; `raw` keeps every other byte.

    `to_bytes()` starts from `raw` (zeros if empty) and overlays the fields, so a
    page read from RAM and written back is byte-identical.
    """

    ext_mem_k: int = 0
    acpi_rsdp_addr: int = 0
    ext_ramdisk_image: int = 0
    ext_ramdisk_size: int = 0
    ext_cmd_line_ptr: int = 0
    alt_mem_k: int = 0
    e820_entries: int = 0
    secure_boot: int = 0
    sentinel: int = 0
    setup_sects: int = 0
    root_flags: int = 0
    syssize: int = 0
    ram_size: int = 0
    vid_mode: int = 0
    root_dev: int = 0
    boot_flag: int = 0
    jump: int = 0
    header: bytes = b"\0\0\0\0"
    version: int = 0
    realmode_swtch: int = 0
    start_sys_seg: int = 0
    kernel_version: int = 0
    type_of_loader: int = 0
    loadflags: int = 0
    setup_move_size: int = 0
    code32_start: int = 0
    ramdisk_image: int = 0
    ramdisk_size: int = 0
    bootsect_kludge: int = 0
    heap_end_ptr: int = 0
    ext_loader_ver: int = 0
    ext_loader_type: int = 0
    cmd_line_ptr: int = 0
    initrd_addr_max: int = 0
    kernel_alignment: int = 0
    relocatable_kernel: int = 0
    min_alignment: int = 0
    xloadflags: int = 0
    cmdline_size: int = 0
    hardware_subarch: int = 0
    hardware_subarch_data: int = 0
    payload_offset: int = 0
    payload_length: int = 0
    setup_data: int = 0
    pref_address: int = 0
    init_size: int = 0
    handover_offset: int = 0
    kernel_info_offset: int = 0
    # Entries beyond e820_entries are not part of the map; to_bytes writes only the list.
    e820_table: list[E820Entry] = field(default_factory=list)
    raw: bytes = b""

    def to_bytes(self) -> bytes:
        if len(self.e820_table) > E820_MAX_ENTRIES_ZEROPAGE:
            raise ValueError(f"{len(self.e820_table)} e820 entries do not fit the zero page")
        page = bytearray(self.raw.ljust(BOOT_PARAMS_SIZE, b"\0")[:BOOT_PARAMS_SIZE])
        for name, (off, fmt) in _FIELDS.items():
            struct.pack_into(fmt, page, off, getattr(self, name))
        for i, entry in enumerate(self.e820_table):
            off = E820_TABLE_OFFSET + i * E820_ENTRY_SIZE
            page[off:off + E820_ENTRY_SIZE] = entry.pack()
        return bytes(page)

    @classmethod
    def from_bytes(cls, data: bytes) -> "BootParams":
        """Decode a zero page; the e820 count is clamped to 128 as the kernel does."""
        if len(data) < BOOT_PARAMS_SIZE:
            raise ValueError(f"boot_params needs {BOOT_PARAMS_SIZE} bytes, got {len(data)}")
        page = bytes(data[:BOOT_PARAMS_SIZE])
        values = {name: struct.unpack_from(fmt, page, off)[0] for name, (off, fmt) in _FIELDS.items()}
        n = min(values["e820_entries"], E820_MAX_ENTRIES_ZEROPAGE)
        table = [E820Entry.unpack(page[E820_TABLE_OFFSET + i * E820_ENTRY_SIZE:])
                 for i in range(n)]
        return cls(**values, e820_table=table, raw=page)

    def write(self, physmem: PhysMem, phys: int) -> None:
        physmem.write(phys, self.to_bytes())

    @classmethod
    def read(cls, physmem: PhysMem, phys: int) -> "BootParams":
        return cls.from_bytes(physmem.read(phys, BOOT_PARAMS_SIZE))

    # The 64-bit values split across the header and the ext_* fields (get_cmd_line_ptr() etc.).
    @property
    def cmd_line_phys(self) -> int:
        return self.cmd_line_ptr | (self.ext_cmd_line_ptr << 32)

    @property
    def ramdisk_phys(self) -> int:
        return self.ramdisk_image | (self.ext_ramdisk_image << 32)

    @property
    def ramdisk_len(self) -> int:
        return self.ramdisk_size | (self.ext_ramdisk_size << 32)


def read_boot_command_line(physmem: PhysMem, bp: BootParams) -> str:
    """What x86 copy_bootdata() puts in boot_command_line: up to COMMAND_LINE_SIZE-1 bytes, NUL-cut.

    A cmd_line_ptr of 0 means "no command line"; bytes past the end of RAM read as absent.
    Bytes are decoded as UTF-8 with surrogateescape so that any byte string survives.
    """
    phys = bp.cmd_line_phys
    if not phys or phys >= physmem.size:
        return ""
    raw = physmem.read(phys, min(COMMAND_LINE_SIZE, physmem.size - phys))
    raw = raw[:COMMAND_LINE_SIZE - 1].split(b"\0", 1)[0]
    return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class SetupData:
    """struct setup_data header as found at `phys`; the payload is the `len` bytes after it."""

    phys: int
    next: int
    type: int
    len: int

    @property
    def data_phys(self) -> int:
        return self.phys + SETUP_DATA_HDR_SIZE

    def read_data(self, physmem: PhysMem) -> bytes | None:
        """The payload, or None where it runs past the end of RAM (early_memremap would fail)."""
        if self.data_phys + self.len > physmem.size:
            return None
        return physmem.read(self.data_phys, self.len)


def pack_setup_data(next_phys: int, type_: int, data: bytes, length: int | None = None) -> bytes:
    """Header plus payload; `length` overrides len (setup_kho() writes len even when unused)."""
    n = len(data) if length is None else length
    return struct.pack("<QII", next_phys, type_, n) + data


def walk_setup_data(physmem: PhysMem, pa_data: int) -> Iterator[SetupData]:
    """Follow a setup_data list from `pa_data` as parse_setup_data() does, but never hang.

    Stops silently at 0, at a header not wholly inside RAM, at the first revisited
    entry (a cycle), or after SETUP_DATA_WALK_MAX entries; see the module docstring.
    """
    seen: set[int] = set()
    while pa_data and len(seen) < SETUP_DATA_WALK_MAX:
        if pa_data in seen or pa_data < 0 or pa_data + SETUP_DATA_HDR_SIZE > physmem.size:
            return
        seen.add(pa_data)
        nxt, type_, length = struct.unpack("<QII", physmem.read(pa_data, SETUP_DATA_HDR_SIZE))
        yield SetupData(pa_data, nxt, type_, length)
        pa_data = nxt


@dataclass(frozen=True)
class KhoData:
    """struct kho_data (packed, LE, 32 bytes): where the KHO FDT and scratch array are."""

    fdt_addr: int
    fdt_size: int
    scratch_addr: int
    scratch_size: int

    def pack(self) -> bytes:
        return struct.pack("<QQQQ", self.fdt_addr, self.fdt_size, self.scratch_addr, self.scratch_size)

    @classmethod
    def unpack(cls, data: bytes) -> "KhoData":
        if len(data) < KHO_DATA_SIZE:
            raise ValueError(f"kho_data needs {KHO_DATA_SIZE} bytes, got {len(data)}")
        return cls(*struct.unpack("<QQQQ", data[:KHO_DATA_SIZE]))
