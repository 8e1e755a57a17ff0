#!/usr/bin/env bash
# Every test: the Rust crate's (with the `s3` feature, against moto's
# server, installed into target/motoenv by scripts/moto.sh), then the Python
# package's (built into a virtualenv under target/ by python/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/moto.sh
cargo test --release --features s3
bash python/test.sh
