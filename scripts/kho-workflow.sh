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

step "reserve_mem=64m:4k:n1: the only 64 MiB range in memblock/reserved"
while read -r _ range _; do
    (( ${range##*..} - ${range%%..*} + 1 == 64 * 1024 * 1024 )) && n1=$(( ${range%%..*} ))
done < /sys/kernel/debug/memblock/reserved
printf 'n1 at %#x\n' "$n1"
mem=/dev/mem; [ -f $mem ] || mem=$KHOFS_ROOT/dev/mem   # no /dev/mem to bind over in a container
head -c 4096 /dev/urandom > "$work/pattern"
dd if="$work/pattern" of=$mem bs=4096 seek=$((n1 / 4096)) conv=notrunc status=none
echo "wrote 4 KiB of random bytes at n1 through $mem"

step "echo 1 > /sys/kernel/debug/kho/out/finalize"
echo 1 > /sys/kernel/debug/kho/out/finalize
dtc -I dtb -O dts /sys/kernel/debug/kho/out/fdt
dtc -I dtb -O dts /sys/kernel/debug/kho/out/sub_fdts/memblock

step "kexec -l Image -s --reuse-cmdline && kexec -e"
khofs mkimage "$work/Image"
kexec -l "$work/Image" -s --reuse-cmdline
kexec -e

step "the new kernel: dtc /sys/kernel/debug/kho/in/fdt"
dtc -I dtb -O dts /sys/kernel/debug/kho/in/fdt
dmesg | grep -E "KHO|Revived"
step "n1 after the kexec"
dd if=$mem bs=4096 skip=$((n1 / 4096)) count=1 status=none | cmp - "$work/pattern" \
    && echo "n1 holds the same 4096 bytes: the memory survived the kexec"
