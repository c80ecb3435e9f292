#!/usr/bin/env bash
# Refreshes the web console's vendored browser libraries from the npm registry.
#
# The files are committed (src/aggregator/console/static/vendor/) and embedded in the binary
# with include_bytes!, so a build needs neither npm nor the network, and nothing is fetched
# at run time. This script is how they got there and the only way they change: each package
# is pinned to an exact version and to the registry's sha512 integrity below; `npm pack`
# fetches the tarball, the integrity is checked, and the one built file plus the package's
# licence are copied out. MANIFEST records name, version, licence and the sha256 of each
# copied file; a test (console::assets) fails if a vendored file no longer matches it.
#
#   scripts/vendor-js.sh           fetch the pinned versions, verify, copy, write MANIFEST
#   scripts/vendor-js.sh --check   fetch and verify only, fail if the tree differs
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=src/aggregator/console/static/vendor

# name  version  -  file-in-package  licence-file  spdx  (integrity pinned in vendor-js.integrity)
PINS=(
  "htmx.org 2.0.11 - dist/htmx.min.js LICENSE 0BSD"
  "uplot 1.6.32 - dist/uPlot.iife.min.js LICENSE MIT"
  "uplot 1.6.32 - dist/uPlot.min.css LICENSE MIT"
  "cytoscape 3.35.0 - dist/cytoscape.min.js LICENSE MIT"
)

check=false
[ "${1:-}" = "--check" ] && check=true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/out"
mkdir -p "$stage"
: >"$stage/MANIFEST"
echo "# name version licence sha256 file (written by scripts/vendor-js.sh; do not edit)" >>"$stage/MANIFEST"
for pin in "${PINS[@]}"; do
  read -r name version integrity file license spdx <<<"$pin"
  tarball="$work/$name-$version.tgz"
  if ! [ -f "$tarball" ]; then
    meta=$(cd "$work" && npm pack "$name@$version" --json --silent)
    got=$(printf '%s' "$meta" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["integrity"])')
    pinned=$(grep -F "$name@$version " scripts/vendor-js.integrity | cut -d' ' -f2 || true)
    if [ -n "$pinned" ] && [ "$pinned" != "$got" ]; then
      echo "integrity mismatch for $name@$version: registry $got, pinned $pinned" >&2
      exit 1
    fi
    [ -n "$pinned" ] || echo "$name@$version $got" >>scripts/vendor-js.integrity
    packed="$work/$(printf '%s' "$meta" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["filename"])')"
    [ "$packed" = "$tarball" ] || mv "$packed" "$tarball"
    mkdir -p "$work/$name"
    tar -xzf "$tarball" -C "$work/$name"
  fi
  base=$(basename "$file")
  cp "$work/$name/package/$file" "$stage/$base"
  cp "$work/$name/package/$license" "$stage/$name.LICENSE"
  echo "$name $version $spdx $(sha256sum "$stage/$base" | cut -d' ' -f1) $base" >>"$stage/MANIFEST"
done
if $check; then
  diff -r "$stage" "$OUT" && echo "vendored files match their pins"
else
  rm -rf "$OUT"
  mkdir -p "$OUT"
  cp "$stage"/* "$OUT"/
  ls -l "$OUT"
fi
