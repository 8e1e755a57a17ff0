#!/usr/bin/env bash
# Installs moto's S3-compatible test server into a virtualenv under target/
# (never committed), where the s3 tests find `moto_server`. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/motoenv"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/moto_server" ]; then
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "moto[server]"
fi
"$venv/bin/moto_server" --help >/dev/null
