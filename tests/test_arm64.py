"""arm64: the QEMU virt machine, its DT boot, the Image loader and the /chosen hand-over (Linux 6.16).

Expected values come from the kernel sources (arch/arm64/kernel/kexec_image.c,
machine_kexec_file.c, drivers/of/kexec.c, drivers/of/fdt.c, arch/arm64/mm/init.c) and
QEMU's hw/arm/virt.c and boot.c; the kexec device tree is checked byte for byte against
libfdt itself (pylibfdt) doing what of_kexec_alloc_and_setup_fdt does.
"""

import errno
import struct
import subprocess
import sys
from pathlib import Path

import libfdt
import pytest
from kho_common import CMDLINE, finalize, log, random_bytes
from test_fs_harness import NO_DEV_MEM, REPO, kexec, mounted

from khofs.kexec_usage import ARM64_USAGE
from sim.arch import make_kernel_image
from sim.arch.arm64.boot.image import ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT, make_image
from sim.arch.x86.boot.bzimage import make_bzimage
from sim.init.main import Kernel
from sim.machine import Machine

RAM = 0x40000000
GiB = 1 << 30
NO_INITRAMFS = 4
ON_CRASH = 2


def boot(cmdline: str = CMDLINE, **kw: object) -> tuple[Machine, Kernel]:
    m = Machine(arch="arm64", cmdline=cmdline, **kw)  # type: ignore[arg-type]
    return m, m.boot()


def dtb_of(k: Kernel) -> bytes:
    image = k.kexec.kexec_image
    assert image is not None
    seg = next(s for s in image.segments if s.mem == image.arch.dtb_mem)
    return seg.buffer[:seg.bufsz]


def regions(k: Kernel, which: str) -> list[tuple[int, int, int]]:
    t = getattr(k.memblock, which)
    return [(r.base, r.base + r.size, r.nid) for r in t.regions]


# -- the machine and its boot --

def test_virt_memory_comes_from_the_dt_memory_nodes() -> None:
    """Expect RAM at 1 GiB, one /memory node per NUMA node with its numa-node-id, and the boot log's
    arm64 lines in setup_arch's order."""
    m, k = boot("kho=on")
    assert regions(k, "memory") == [(RAM, RAM + 4 * GiB, 0), (RAM + 4 * GiB, RAM + 8 * GiB, 1)]
    assert k.online_nodes == [0, 1]
    lines = log(k)
    assert lines[0] == "Booting Linux on physical CPU 0x0000000000 [0x411fd070]"
    assert lines[1].startswith("Linux version 6.16.0-khofs ")
    assert lines[2] == "KASLR enabled"                     # QEMU put a kaslr-seed in /chosen
    assert "KASLR disabled on command line" in log(boot("kho=on nokaslr")[1])
    assert lines.index("Machine model: linux,dummy-virt") < lines.index("efi: UEFI not found.") \
        < lines.index("Kernel command line: kho=on")
    tree = libfdt.Fdt(k.platform_files()["/sys/firmware/fdt"][1])
    assert [tree.get_name(n) for n in _subnodes(tree, 0)] == \
        ["chosen", "memory@40000000", "memory@140000000", "cpus", "distance-map"]
    matrix = struct.unpack(">12I", bytes(tree.getprop(tree.path_offset("/distance-map"), "distance-matrix")))
    assert matrix == (0, 0, 10, 0, 1, 20, 1, 0, 20, 1, 1, 10)


def _subnodes(tree: libfdt.Fdt, node: int) -> list[int]:
    out, child = [], tree.first_subnode(node, quiet=(libfdt.NOTFOUND,))
    while child >= 0:
        out.append(child)
        child = tree.next_subnode(child, quiet=(libfdt.NOTFOUND,))
    return out


def test_kernel_dtb_and_initrd_are_reserved_where_qemu_put_them() -> None:
    """Expect the Image at RAM + 2 MiB (reserved from _stext = +64 KiB to _end), the initrd at
    RAM + 128 MiB (page-aligned reservation) and the DTB 2 MiB-aligned after it (exact size)."""
    m, k = boot("kho=on", initrd=b"R" * 5000)
    dtb = k.arch.dt.initial_boot_params_pa
    assert (k.load_addr, dtb) == (RAM + (2 << 20), RAM + (130 << 20))
    reserved = [(b, e) for b, e, _ in regions(k, "reserved")]
    assert (RAM + (2 << 20) + 0x10000, RAM + (34 << 20)) in reserved
    assert (RAM + (128 << 20), RAM + (128 << 20) + 0x2000) in reserved
    size = struct.unpack(">I", m.physmem.read(dtb + 4, 4))[0]
    assert (dtb, dtb + size) in reserved


def test_config_cmdline_only_without_bootargs() -> None:
    """arm64's CONFIG_CMDLINE_FROM_BOOTLOADER: the built-in line is used when /chosen has no bootargs."""
    m, k = boot("kho=on", test_kho=False)
    finalize(k)
    k.kexec_file_load(make_image(cmdline="kho=on reserve_mem=1M:4k:n1"), None, "", NO_INITRAMFS)
    assert m.kexec().cmdline == "kho=on reserve_mem=1M:4k:n1"
    k = m.kernel
    k.kexec_file_load(make_image(cmdline="kho=on reserve_mem=1M:4k:n1"), None, "kho=on quiet", NO_INITRAMFS)
    assert m.kexec().cmdline == "kho=on quiet"


def test_low_scratch_ends_below_the_dma_zone() -> None:
    """ARCH_LOW_ADDRESS_LIMIT is arm64_dma_phys_limit - 1: 4 GiB with RAM reaching past it, else RAM's end."""
    _, k = boot("kho=on kho_scratch=16M,64M,32M", mem="2G", nodes=1)
    assert k.arch.arm64_dma_phys_limit == RAM + 2 * GiB
    _, k = boot("kho=on kho_scratch=16M,64M,32M")
    low = k.kho.kho_scratch[0]
    assert k.arch.arm64_dma_phys_limit == 4 * GiB and low.addr + low.size <= 4 * GiB


# -- kexec_file_load: probe and load --

def test_cross_architecture_images_are_refused_by_the_probe() -> None:
    """Expect x86's bzImage64_probe to say "Not a bzImage" and give -ENOEXEC for an arm64 Image, and
    arm64's image_probe to give -EINVAL (its own return value, passed on by kexec_image_probe_default)
    silently for a bzImage."""
    x86 = Machine(cmdline="kho=on").boot()
    with pytest.raises(OSError) as e:
        x86.kexec_file_load(make_image(), None, "", NO_INITRAMFS)
    assert e.value.errno == errno.ENOEXEC
    assert "kexec-bzImage64: Not a bzImage" in log(x86)
    _, k = boot("kho=on")
    before = log(k)
    with pytest.raises(OSError) as e:
        k.kexec_file_load(make_bzimage(), None, "", NO_INITRAMFS)
    assert e.value.errno == errno.EINVAL and log(k) == before


@pytest.mark.parametrize(("patch", "err"), [
    (lambda img: img[:63], errno.EINVAL),                                          # shorter than the header
    (lambda img: img[:16] + bytes(8) + img[24:], errno.EINVAL),                    # image_size 0
    (lambda img: img[:24] + struct.pack("<Q", 2 << ARM64_IMAGE_FLAG_PAGE_SIZE_SHIFT) + img[32:],
     errno.EINVAL),                                                                # 16K pages: no TGran16
])
def test_image_header_checks(patch, err: int) -> None:  # noqa: ANN001
    _, k = boot("kho=on")
    with pytest.raises(OSError) as e:
        k.kexec_file_load(patch(make_image()), None, "", NO_INITRAMFS)
    assert e.value.errno == err


def test_crash_images_are_not_supported() -> None:
    """image_load refuses crash images; with KHO on, kho_fill_kimage's scratch segment fails first
    (no crashkernel= reservation to put it in)."""
    _, k = boot("")
    with pytest.raises(OSError) as e:
        k.kexec_file_load(make_image(), None, "", NO_INITRAMFS | ON_CRASH)
    assert e.value.errno == errno.EOPNOTSUPP
    _, k = boot("kho=on")
    with pytest.raises(OSError) as e:
        k.kexec_file_load(make_image(), None, "", NO_INITRAMFS | ON_CRASH)
    assert e.value.errno == errno.EADDRNOTAVAIL


def test_segments_kernel_2m_aligned_bottom_up_then_initrd_then_dtb_top_down_all_in_scratch() -> None:
    m, k = boot()
    finalize(k)
    text_offset = 0x80000
    image = bytearray(make_image())
    image[8:16] = struct.pack("<Q", text_offset)
    k.kexec_file_load(bytes(image), random_bytes(3 << 20), "", 0)
    img = k.kexec.kexec_image
    assert img is not None
    scratch, kernel, initrd, dtb = img.segments
    areas = [(a.addr, a.addr + a.size) for a in k.kho.kho_scratch]
    # Scratch is walked in order (lowmem 16 MiB is too small for the kernel; global is next).
    assert kernel.mem == areas[1][0] + text_offset and img.start == kernel.mem
    assert kernel.memsz == 32 << 20
    assert initrd.mem == kernel.mem + kernel.memsz                 # bottom-up, right after the kernel
    assert dtb.mem % (2 << 20) == 0 and dtb.mem > initrd.mem          # top-down, 2 MiB-aligned
    for s in img.segments:
        assert any(a <= s.mem and s.mem + s.memsz <= e for a, e in areas), hex(s.mem)
    assert (img.arch.dtb_mem, scratch.mem) == (dtb.mem, img.kho_scratch.mem)


def test_kexec_dtb_is_what_libfdt_makes_of_the_running_tree() -> None:
    """of_kexec_alloc_and_setup_fdt replayed with libfdt (pylibfdt) on the same tree: the same bytes.

    The random kaslr-seed and rng-seed values are taken from ours; everything else — property
    order (libfdt puts new ones first), string table, reservation map, packing — must match."""
    m, k = boot(initrd=b"I" * 5000)
    finalize(k)
    initrd = random_bytes(1 << 20)
    cmdline = "console=ttyAMA0 kho=on"
    k.kexec_file_load(make_image(), initrd, cmdline, 0)
    ours = dtb_of(k)
    img = k.kexec.kexec_image
    initrd_mem = next(s.mem for s in img.segments if s.bufsz == len(initrd))

    initial = k.arch.dt.blob()
    f = libfdt.Fdt(bytearray(initial))
    f.resize(len(initial) + len(cmdline) + 0x1000)
    fdt = f._fdt
    chosen = f.path_offset("/chosen")
    for name in ("linux,elfcorehdr", "linux,usable-memory-range"):
        f.delprop(chosen, name, quiet=(libfdt.NOTFOUND,))
    f.setprop_u64(chosen, "linux,initrd-start", initrd_mem)
    f.setprop_u64(chosen, "linux,initrd-end", initrd_mem + len(initrd))
    assert libfdt.fdt_add_mem_rsv(fdt, initrd_mem, len(initrd)) == 0
    for name in ("linux,kho-fdt", "linux,kho-scratch"):
        f.delprop(chosen, name, quiet=(libfdt.NOTFOUND,))
    assert libfdt.fdt_appendprop_addrrange(fdt, 0, chosen, "linux,kho-fdt", img.kho_fdt, 4096) == 0
    assert libfdt.fdt_appendprop_addrrange(fdt, 0, chosen, "linux,kho-scratch", img.kho_scratch.mem,
                                           img.kho_scratch.bufsz) == 0
    f.setprop_str(chosen, "bootargs", cmdline)
    f.delprop(chosen, "kaslr-seed", quiet=(libfdt.NOTFOUND,))
    theirs_chosen = libfdt.Fdt(ours).path_offset("/chosen")
    seed = bytes(libfdt.Fdt(ours).getprop(theirs_chosen, "kaslr-seed"))
    f.setprop(chosen, "kaslr-seed", seed)
    f.setprop(chosen, "rng-seed", bytes(libfdt.Fdt(ours).getprop(theirs_chosen, "rng-seed")))
    f.setprop(chosen, "linux,booted-from-kexec", b"")
    f.pack()
    assert ours == bytes(f.as_bytearray())
    assert len(bytes(libfdt.Fdt(ours).getprop(theirs_chosen, "rng-seed"))) == 128


# -- the hand-over --

def test_handover_through_chosen_revives_n1_and_shows_in_sysfs() -> None:
    """Expect the new kernel to find the hand-over in /chosen (kho_populate), revive n1 at the same
    address with its bytes, read the same root FDT, and show both properties under
    /sys/firmware/devicetree/base/chosen, which a cold boot lacks."""
    m, k0 = boot(scrub=True)
    chosen = "/sys/firmware/devicetree/base/chosen/"
    assert chosen + "linux,kho-fdt" not in k0.platform_files()
    finalize(k0)
    out_fdt = k0.debugfs.read("kho/out/fdt")
    n1 = k0.reserve_mem.reserve_mem_find_by_name("n1")
    pattern = random_bytes(n1[1])
    m.physmem.write(n1[0], pattern)
    k0.kexec_file_load(make_image(), None, k0.cmdline, NO_INITRAMFS)
    k1 = m.kexec()
    assert "KHO: found kexec handover data. Will skip init for some devices" in log(k1)
    assert k1.debugfs.read("kho/in/fdt") == out_fdt
    assert k1.reserve_mem.reserve_mem_find_by_name("n1") == n1
    assert m.physmem.read(n1[0], n1[1]) == pattern
    files = k1.platform_files()
    fdt_addr, fdt_len = struct.unpack(">QQ", files[chosen + "linux,kho-fdt"][1])
    assert (fdt_addr, fdt_len) == (k0.kho.ser.fdt.phys, 4096)
    scratch, size = struct.unpack(">QQ", files[chosen + "linux,kho-scratch"][1])
    assert size == 16 * len(k0.kho.kho_scratch) and scratch == k1.kho.kho_in_scratch_phys
    assert files[chosen + "linux,booted-from-kexec"][1] == b""
    assert "/sys/firmware/devicetree/base/chosen/rng-seed" not in files     # NOP'd at boot
    assert files[chosen + "kaslr-seed"][1] == bytes(8)                      # wiped at boot
    assert "KASLR enabled" in log(k1)                       # of_kexec_alloc_and_setup_fdt's new seed
    assert files["/sys/firmware/fdt"][0] == 0o400 and k1.platform_links() == {
        "/proc/device-tree": "/sys/firmware/devicetree/base"}


def test_kho_properties_of_the_wrong_length_are_ignored_silently() -> None:
    """early_init_dt_check_kho wants exactly (#address-cells + #size-cells) cells: anything else and the
    kernel boots as if there were no hand-over, without a word."""
    m, k0 = boot()
    finalize(k0)
    k0.kexec_file_load(make_image(), None, k0.cmdline, NO_INITRAMFS)
    img = k0.kexec.kexec_image
    seg = next(s for s in img.segments if s.mem == img.arch.dtb_mem)
    tree = libfdt.Fdt(bytearray(seg.buffer[:seg.bufsz]))
    tree.resize(seg.bufsz + 64)
    chosen = tree.path_offset("/chosen")
    tree.setprop(chosen, "linux,kho-fdt", bytes(tree.getprop(chosen, "linux,kho-fdt")) + bytes(4))
    tree.pack()
    seg.buffer, seg.bufsz = bytes(tree.as_bytearray()), len(tree.as_bytearray())
    k1 = m.kexec()
    assert not [line for line in log(k1) if "found kexec handover" in line or "disabling" in line]
    assert not k1.debugfs.exists("kho/in")


def test_iomem_is_arm64s() -> None:
    _, k = boot("kho=on", mem="2G", nodes=1)
    lines = k.iomem().splitlines()
    assert lines[0] == "40000000-bfffffff : System RAM"
    assert lines[1:3] == ["  40210000-411fffff : Kernel code", "  41200000-419fffff : reserved"]
    assert lines[3] == "  41a00000-421fffff : Kernel data"
    assert all(line.startswith("  ") and line.endswith(" : reserved") for line in lines[4:])


# -- user space: mkimage, the kexec clone, the mount --

def test_mkimage_arm64_writes_an_image_header(tmp_path: Path) -> None:
    from khofs.cli import main
    out = tmp_path / "Image"
    assert main(["mkimage", "--arch", "arm64", "--cmdline", "kho=on", str(out)]) == 0
    data = out.read_bytes()
    assert data[56:60] == b"ARM\x64" and data[:2] == b"MZ"
    assert data == make_kernel_image("arm64", "6.16", "kho=on")


def test_kexec_clone_on_arm64(tmp_path: Path) -> None:
    """kexec-tools 2.0.25's arm64 build: its --help, Image accepted, a bzImage not recognised, --dtb read
    for the kexec_load path (which the simulated kernel lacks)."""
    (tmp_path / "Image").write_bytes(make_image())
    (tmp_path / "bzImage").write_bytes(make_bzimage())
    (tmp_path / "bad.dtb").write_bytes(b"not a tree")
    with mounted(tmp_path, "kho=on", arch="arm64") as (m, mnt):
        r = kexec(mnt, "--help", cwd=tmp_path)
        assert (r.returncode, r.stdout) == (0, "kexec-tools 2.0.25\n" + ARM64_USAGE)
        r = kexec(mnt, "-s", "-l", "bzImage", cwd=tmp_path)
        assert (r.returncode, r.stderr) == (255, "Cannot determine the file type of bzImage\n")
        r = kexec(mnt, "-t", "bzImage64", "-l", "Image", cwd=tmp_path)
        assert (r.returncode, r.stderr) == (255, "Unsupported kernel type bzImage64\n")
        r = kexec(mnt, "-t", "vmlinux", "-l", "Image", cwd=tmp_path)
        assert (r.returncode, r.stderr) == (255, "Wrong file type vmlinux, file matches type Image\n")
        r = kexec(mnt, "-l", "Image", "--dtb=bad.dtb", cwd=tmp_path)
        assert (r.returncode, r.stderr) == (255, "kexec: Invalid 2nd device tree.\nkexec: load failed.\n"
                                                 "Cannot load Image\n")
        r = kexec(mnt, "-l", "Image", cwd=tmp_path)          # /sys/firmware/fdt is valid
        assert (r.returncode, r.stderr) == (255, "kexec_load failed: Function not implemented\n")
        r = kexec(mnt, "-s", "-l", "Image", "--dtb=bad.dtb", "--append=kho=on", cwd=tmp_path)
        assert (r.returncode, r.stderr) == (0, "")          # file mode: the kernel builds the DT
        assert m.kernel.kexec_loaded
        assert (mnt / "proc/sys/kernel/arch").read_text() == "aarch64\n"
        assert (mnt / "proc/device-tree").resolve() == Path("/sys/firmware/devicetree/base")
        assert (mnt / "sys/firmware/devicetree/base/chosen/bootargs").read_bytes() == b"kho=on\0"


def test_x86_kexec_does_not_recognise_an_arm64_image(tmp_path: Path) -> None:
    (tmp_path / "Image").write_bytes(make_image())
    with mounted(tmp_path, "kho=on") as (_m, mnt):
        r = kexec(mnt, "-s", "-l", "Image", cwd=tmp_path)
        assert (r.returncode, r.stderr) == (255, "Cannot determine the file type of Image\n")
        assert not (mnt / "sys/firmware").exists()
        assert (mnt / "proc/sys/kernel/arch").read_text() == "x86_64\n"


# -- end to end: the seed's transcript and the demo, through `khofs run --arch arm64` --

def _run(tmp_path: Path, *args: str) -> "subprocess.CompletedProcess[str]":
    bindir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "khofs.cli", *args], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env=env)
    assert (r.returncode, r.stderr) == (0, NO_DEV_MEM if args[0] == "run" else ""), r.stdout + r.stderr
    return r


TRANSCRIPT = (
    "echo 1 > /sys/kernel/debug/kho/out/finalize",
    "dtc /sys/kernel/debug/kho/out/fdt",
    "kexec -l Image --initrd=initrd -s && kexec -e",
    "dtc /sys/kernel/debug/kho/in/fdt",
)
N1 = ("khofs decode --json | python3 -c 'import json, sys; n1 = json.load(sys.stdin)[\"reserve_mem\"][0];"
      " print(n1[\"start\"], n1[\"size\"])'")


def test_seed_transcript_runs_verbatim_on_arm64(tmp_path: Path) -> None:
    """The issue's "Done when": the How-to-Use commands, unchanged (our checks between them), with an
    Image whose CONFIG_CMDLINE carries the KHO options (kexec passes no command line, so arm64 uses
    the built-in one); n1 keeps its address and 64 MiB on a scrubbing machine, in/fdt is the old
    out/fdt, and the new kernel's /chosen has linux,kho-fdt."""
    _run(tmp_path, "mkimage", "--arch", "arm64", "--cmdline", CMDLINE, "Image")
    (tmp_path / "initrd").write_bytes(random_bytes(1 << 20))
    script = f"""set -e
{TRANSCRIPT[0]}
read -r start size < <({N1})
head -c $size /dev/urandom > pattern
dd if=pattern of=$KHOFS_ROOT/dev/mem bs=1M seek=$((start >> 20)) conv=notrunc status=none
{TRANSCRIPT[1]}
cp /sys/kernel/debug/kho/out/fdt out.fdt
{TRANSCRIPT[2]}
{TRANSCRIPT[3]}
cmp /sys/kernel/debug/kho/in/fdt out.fdt && echo "in/fdt is the old out/fdt"
read -r start2 size2 < <({N1})
[ "$start $size" = "$start2 $size2" ] && echo "n1 at the same address with $((size >> 20)) MiB"
dd if=$KHOFS_ROOT/dev/mem bs=1M skip=$((start >> 20)) count=$((size >> 20)) status=none | cmp - pattern \\
    && echo "n1 holds the same bytes"
test -e /sys/firmware/devicetree/base/chosen/linux,kho-fdt && echo "chosen/linux,kho-fdt present"
cat /proc/cmdline
"""
    r = _run(tmp_path, "run", "--arch", "arm64", "--scrub", "--cmdline", CMDLINE, "--", "bash", "-c", script)
    for line in ("in/fdt is the old out/fdt", "n1 at the same address with 64 MiB", "n1 holds the same bytes",
                 "chosen/linux,kho-fdt present", CMDLINE):
        assert line + "\n" in r.stdout, r.stdout
    assert r.stdout.count('compatible = "kho-v1";') == 2


def test_demo_workflow_on_arm64(tmp_path: Path) -> None:
    """scripts/demo.sh --arch arm64: the same workflow, the hand-over shown in /chosen."""
    r = _run(tmp_path, "run", "--arch", "arm64", "--scrub", "--test-kho", "--kho-sanitizer", "--cmdline",
             CMDLINE, "--", "bash", str(REPO / "scripts" / "kho-workflow.sh"))
    out = r.stdout
    assert "n1 holds the same 64 MiB: the memory survived the kexec\n" in out
    assert "] test_kho: KHO restore succeeded\n" in out and "\n0 findings\n" in out
    assert "linux,kho-fdt:\n00000000  00 00 00 0" in out and "linux,kho-scratch:\n" in out


def test_test_kho_checksums_with_the_architecture_s_csum_partial() -> None:
    """lib/test_kho's csum is csum_partial's: x86_64's 32-bit fold, arm64's lib/checksum.c 16-bit one."""
    data = b"\xff\xff\x00\x01" * 4
    _, arm = boot("kho=on", mem="1G", nodes=1)
    x86 = Machine(mem="1G", nodes=1, cmdline="kho=on").boot()
    assert arm.arch.csum_partial(data, 0) == 0x0400          # 4 x (0xffff + 0x0100), folded to 16 bits
    assert x86.arch.csum_partial(data, 0) == 0x0403FFFC      # 2 x 0x0100ffff0100ffff, folded to 32 bits


def test_x86_parameters_are_unknown_on_arm64_and_mem_is_arm64s() -> None:
    """apic and iommu= are x86's early parameters: an arm64 kernel passes them to user space; its own
    mem= limits memblock in arm64_memblock_init."""
    _, k = boot("kho=on apic iommu=soft mem=2G")
    lines = log(k)
    assert "Memory limited to 2048MB" in lines
    unknown = next(line for line in lines if line.startswith("Unknown kernel command line parameters"))
    assert '"apic iommu=soft"' in unknown
    assert k.memblock.end_of_DRAM() <= RAM + 2 * GiB


def test_a_kho_users_pytest_runs_on_arm64_with_khofs_arch(tmp_path: Path) -> None:
    """README "Write a KHO user": the same module and test, --khofs-arch=arm64 (kho_kexec loads an Image)."""
    from test_kho_user import environment, readme_blocks
    (tmp_path / "demo_kho.py").write_text(readme_blocks()[0])
    (tmp_path / "test_demo.py").write_text(readme_blocks()[2] + (
        "\n\ndef test_the_machine_is_arm64(kho_machine):\n"
        "    assert kho_machine(mem='1G', nodes=1).kernel.arch.name == 'arm64'\n"))
    env = {k: v for k, v in environment().items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--khofs-arch=arm64",
                        "test_demo.py"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("corrupt", ["magic", "misaligned"])
def test_a_bad_dtb_stops_the_boot_with_the_kernels_message(corrupt: str) -> None:
    """setup_machine_fdt: a blob fixmap_remap_fdt refuses (not FDT_MAGIC, not 8-byte aligned) gets
    pr_crit's lines and a kernel that spins for ever: a stopped machine, not a Python error."""
    m, k0 = boot()
    finalize(k0)
    k0.kexec_file_load(make_image(), None, k0.cmdline, NO_INITRAMFS)
    img = k0.kexec.kexec_image
    if corrupt == "magic":
        seg = next(s for s in img.segments if s.mem == img.arch.dtb_mem)
        seg.buffer = b"\0\0\0\0" + seg.buffer[4:]
    else:
        img.arch.dtb_mem += 4
    k1 = m.kexec()
    lines = log(k1)
    pa = img.arch.dtb_mem
    assert any(line.startswith(f"Error: invalid device tree blob: PA=0x{pa:016x}, VA=") for line in lines)
    assert "Please check your bootloader." in lines
    assert k1.panic_message is not None and "khofs" in k1.panic_message
