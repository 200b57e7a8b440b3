#!/bin/bash
# The whole test suite, from a fresh machine: installs what it needs, lints, runs pytest.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$top/scripts/setup.sh"
cd "$top"
# Test the libfuse that distributions ship now (mfusepy would prefer libfuse2).
export FUSE_LIBRARY_NAME=fuse3
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
