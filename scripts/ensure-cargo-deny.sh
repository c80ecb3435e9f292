#!/usr/bin/env bash
# Installs the pinned cargo-deny from crates.io when it is missing (idempotent; ~3 min on 2 cores).
set -euo pipefail
VERSION=0.20.2
if cargo deny --version 2>/dev/null | grep -q " $VERSION\$"; then exit 0; fi
echo "installing cargo-deny $VERSION (once)" >&2
cargo install --locked "cargo-deny@$VERSION"
