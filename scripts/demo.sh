#!/bin/bash
# The main demo, for a fresh Debian machine as root: install, boot a simulated 8 GiB,
# 2-node machine with KHO, walk the KHO workflow at the real paths, clean up.
# `bash scripts/demo.sh --arch arm64` does the same on an arm64 QEMU virt machine.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$top/scripts/setup.sh"
export PATH="$top/.venv/bin:$PATH"
# --scrub poisons whatever the new kernel may reuse, so only truly preserved memory survives;
# --kho-sanitizer reports any KHO misuse in the new kernel (none here).  The memory map is
# drawn to memmap.svg in the current directory.
export KHOFS_MEMMAP_SVG="$PWD/memmap.svg"
exec khofs run "$@" --mem 8G --nodes 2 --scrub --test-kho --kho-sanitizer \
    --cmdline "kho=on kho_scratch=16M,512M,256M reserve_mem=64m:4k:n1" \
    -- bash "$top/scripts/kho-workflow.sh"
