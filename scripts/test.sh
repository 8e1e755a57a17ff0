#!/usr/bin/env bash
# Every test: the Rust crate's, then the Python package's (built into a
# virtualenv under target/ by python/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release
bash python/test.sh
