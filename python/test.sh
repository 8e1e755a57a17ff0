#!/usr/bin/env bash
# Builds the Python package in release mode into a virtualenv and runs its
# tests. Works on a fresh machine with CPython >= 3.9 and pip; the
# virtualenv lives under target/ so it is never committed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${CKPTDB_PYTHON_VENV:-$root/target/pyenv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet maturin numpy pytest ml_dtypes safetensors "jax[cpu]"

# maturin develop installs into the active virtualenv.
(
    cd "$here"
    VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --release --quiet
)
cd "$here"
exec "$venv/bin/python" -m pytest -q tests "$@"
