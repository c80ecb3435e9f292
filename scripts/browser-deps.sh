#!/usr/bin/env bash
# Installs what the console's browser test needs, idempotently: Debian's chromium (apt) and
# playwright-core (npm, pinned in tests/browser/package-lock.json, into tests/browser/node_modules).
# Run by `make test` and by the browser test itself; quick when both are present. Needs root for
# apt (CI runs as root); a concurrent run waits on a lock instead of racing apt or npm.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 9>"${TMPDIR:-/tmp}/procflow-browser-deps.lock"
flock 9

if ! [ -x /usr/bin/chromium ]; then
  echo "browser-deps: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if ! [ -f tests/browser/node_modules/playwright-core/package.json ] ||
   ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.package-lock.json.installed; then
  echo "browser-deps: installing playwright-core from npm (tests/browser/package-lock.json)" >&2
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >&2
  cp tests/browser/package-lock.json tests/browser/node_modules/.package-lock.json.installed
fi
