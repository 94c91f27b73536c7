#!/usr/bin/env bash
# The UI test (tests/e2e/test_ui.py) drives Debian's Chromium with Playwright; Playwright's own browser
# download is not used. Installs the `chromium` package when it is missing and this shell may (root
# with apt-get); otherwise says how, and the UI test is skipped (outside CI) or fails (CI=true).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -n "${CORMORANT_CHROMIUM:-}" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the UI test..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  chromium --version
else
  echo "No chromium: 'sudo apt-get install chromium' (or set CORMORANT_CHROMIUM to a Chromium binary)" \
    "to run the UI test." >&2
fi
