#!/usr/bin/env bash
# Write the lock of a tested environment: every installed distribution at its exact version.
# Usage: requirements/freeze.sh VENV OUT   (called by `make lock`). Packages installed from a
# folder or a repository (glide-text2im, not on PyPI) are left out: a lock pins registry releases.
# torch is written without its local build label (2.13.0, not 2.13.0+cpu) so that the same lock
# admits the CPU build on a laptop and PyPI's CUDA build on a workstation (`make venv TORCH=torch`).
set -euo pipefail
venv=$1 out=$2
python=$("$venv/bin/python" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))')
torch=$("$venv/bin/python" -c 'import torch; print(torch.__version__)')
{
    echo "# medprobe's tested environment: pip constraints, written by \`make lock\` on $(date -u +%Y-%m-%d)"
    echo "# Python $python on $(uname -m) Linux, torch $torch; the suite passed in a new venv built from it."
    echo "# \`make venv\` installs with -c this file; pyproject.toml keeps the ranges for library users."
    "$venv/bin/pip" freeze --exclude-editable --disable-pip-version-check | grep -v ' @ ' | sed -E 's/^(torch==[^+]+)\+.*/\1/' | LC_ALL=C sort -f
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "lock: wrote $out ($(grep -vc '^#' "$out") pinned distributions)"
