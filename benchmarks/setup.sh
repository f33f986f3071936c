#!/bin/sh
# The benchmark's set-up: restic and borg from apt (Debian/Ubuntu, as root), the Python baselines
# and matplotlib in an environment of their own (~/.cache/studio-bench, which run.py finds by itself).
#   sh benchmarks/setup.sh
set -e
here=$(dirname "$0")
if command -v apt-get >/dev/null 2>&1; then
    apt-get update
    apt-get install -y restic borgbackup
else
    echo "no apt-get here: install restic (>= 0.14 for --compression) and borgbackup yourself" >&2
fi
restic version
borg --version
python3 -m venv "$HOME/.cache/studio-bench"
"$HOME/.cache/studio-bench/bin/pip" install -r "$here/requirements.txt"
