#!/usr/bin/env bash
# Test-only tools for tests/webui/test_browser.py: Debian's chromium and the npm package
# playwright-core (into tests/browser/node_modules, gitignored; it downloads no browser).
# Safe to re-run. Without these the browser test is skipped with a reason.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "install.sh: chromium missing and apt-get unavailable (not root?)" >&2
  fi
fi
if [ ! -f node_modules/playwright-core/package.json ]; then
  if command -v npm >/dev/null 2>&1; then
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error 2>/dev/null \
      || PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error
  else
    echo "install.sh: npm missing; the browser test will be skipped" >&2
  fi
fi
command -v chromium >/dev/null 2>&1 && chromium --version 2>/dev/null | head -1 || true
[ -f node_modules/playwright-core/package.json ] && echo "playwright-core $(node -p "require('./node_modules/playwright-core/package.json').version")" || true
