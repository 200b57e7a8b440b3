#!/bin/bash
# The KHO workflow of Documentation/admin-guide/mm/kho.rst, as a user types it on a real
# box; run inside `khofs run` so every path below is the simulated machine's.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { printf '\n\033[1m# %s\033[0m\n' "$*"; }

step "dmesg | grep KHO"
dmesg | grep KHO
step "the scratch areas the next kernel will boot from"
paste /sys/kernel/debug/kho/out/scratch_phys /sys/kernel/debug/kho/out/scratch_len

step "echo 1 > /sys/kernel/debug/kho/out/finalize"
echo 1 > /sys/kernel/debug/kho/out/finalize
dtc -I dtb -O dts /sys/kernel/debug/kho/out/fdt

step "khofs decode: the same hand-over as the kernel reads it (u64s are little-endian addresses)"
khofs decode

step "where reserve_mem=64m:4k:n1 lives (khofs decode --json, integers as numbers)"
read -r n1 n1_size < <(khofs decode --json | python3 -c \
    'import json, sys; n1 = json.load(sys.stdin)["reserve_mem"][0]; print(n1["start"], n1["size"])')
printf 'n1 at %#x, %d MiB\n' "$n1" $((n1_size >> 20))
mem=/dev/mem; [ -c $mem ] || mem=$KHOFS_ROOT/dev/mem   # no /dev/mem to bind over in a container
head -c "$n1_size" /dev/urandom > "$work/pattern"
dd if="$work/pattern" of=$mem bs=1M seek=$((n1 >> 20)) conv=notrunc status=none
echo "wrote $((n1_size >> 20)) MiB of random bytes at n1 through $mem"

step "kexec -l Image -s --reuse-cmdline && kexec -e"
arch=x86_64; [ "$(cat "$KHOFS_ROOT/proc/sys/kernel/arch")" = aarch64 ] && arch=arm64
khofs mkimage --arch $arch "$work/Image"
kexec -l "$work/Image" -s --reuse-cmdline
kexec -e

step "the new kernel: dtc /sys/kernel/debug/kho/in/fdt"
dtc -I dtb -O dts /sys/kernel/debug/kho/in/fdt
if [ $arch = arm64 ]; then
    step "arm64: the hand-over came in the device tree's /chosen (hexdump -C)"
    for p in linux,kho-fdt linux,kho-scratch; do
        echo "$p:"; hexdump -C "/sys/firmware/devicetree/base/chosen/$p"
    done
fi
dmesg | grep -E "KHO|Revived|test_kho"
step "n1 after the kexec"
dd if=$mem bs=1M skip=$((n1 >> 20)) count=$((n1_size >> 20)) status=none | cmp - "$work/pattern" \
    && echo "n1 holds the same $((n1_size >> 20)) MiB: the memory survived the kexec"
step "the KHO sanitizer's findings (khofs/kho_sanitizer; none on a clean hand-over)"
sanitizer=$KHOFS_ROOT/khofs/kho_sanitizer
if [ -e "$sanitizer" ]; then echo "$(wc -l < "$sanitizer") findings"; cat "$sanitizer"; fi

step "khofs memmap --before-after: the old kernel's map (from the hand-over) beside the new one's"
khofs memmap --before-after ${KHOFS_MEMMAP_SVG:+--svg "$KHOFS_MEMMAP_SVG"}
