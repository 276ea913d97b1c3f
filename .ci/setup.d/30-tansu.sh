#!/usr/bin/env bash
# tansu: a Kafka-protocol broker (crates.io), for adapters/kafka/tests/tansu.rs, which start it on
# a free port of 127.0.0.1 with in-memory storage. Installed only when missing: the build takes
# 9 to 20 minutes on two cores (20 with -j 1). Pinned to the version whose CLI the tests use;
# `dynostore` is the feature behind `--storage-engine memory://`.
set -euo pipefail

if command -v tansu >/dev/null 2>&1; then
  echo "tansu: $(command -v tansu)"
  exit 0
fi

echo "tansu: not found; installing it with cargo (9 to 20 minutes)"
cargo install --locked tansu --version 0.6.0 --features dynostore
command -v tansu >/dev/null 2>&1 || {
  echo "tansu: installed, but not on PATH; add ~/.cargo/bin to PATH" >&2
  exit 1
}
