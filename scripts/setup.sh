#!/bin/bash
# Everything a fresh Debian machine (as root) needs before khofs runs: system
# packages, then a virtualenv in .venv with khofs and its test tools.
# Idempotent and quiet when there is nothing to do; sourced by demo.sh and test.sh.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

need=()
command -v dtc >/dev/null || need+=(device-tree-compiler)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v unshare >/dev/null || need+=(util-linux)
ldconfig -p | grep -q 'libfuse\.so\.2' || need+=(libfuse2)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v python3 >/dev/null || need+=(python3)
# pylibfdt (a test extra) compiles a C extension; its build pulls swig from PyPI itself.
# The tests also compile tests/c/kho_init.c with it.
command -v gcc >/dev/null || need+=(gcc)
# The real kexec-tools, run inside `khofs run` with its system calls intercepted.
command -v kexec >/dev/null || [ -x /usr/sbin/kexec ] || need+=(kexec-tools)
python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null ||
    need+=(python3-dev)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # kexec-tools asks whether it should handle reboots: never on a machine that runs khofs.
    echo "kexec-tools kexec-tools/load_kexec boolean false" | debconf-set-selections
    apt-get update -qq
    # Debian 13 renamed libfuse2 to libfuse2t64.
    if [[ " ${need[*]} " == *" libfuse2 "* ]] && ! apt-cache show libfuse2 >/dev/null 2>&1; then
        need=("${need[@]/libfuse2/libfuse2t64}")
    fi
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x "$top/.venv/bin/python" ]; then
    python3 -m venv "$top/.venv"
fi
stamp="$top/.venv/.khofs-installed"
if [ ! -f "$stamp" ] || [ "$top/pyproject.toml" -nt "$stamp" ]; then
    "$top/.venv/bin/pip" install -q --disable-pip-version-check -e "$top[test]"
    touch "$stamp"
fi
