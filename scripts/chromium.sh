#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian's `chromium` and `chromium-driver`) when
# `chromedriver` is missing: the real-stack browser test (tests/real_ory/browser.rs) drives them.
# Safe to run again (does nothing when both are there): `bash scripts/chromium.sh` (scripts/test.sh).
# Only Debian's package archive is used; the browser reaches no other host in the tests.
set -euo pipefail
if command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "installing chromium and chromium-driver (the real-stack browser test drives them)..." >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
for b in chromium chromedriver; do
  command -v "$b" >/dev/null 2>&1 || { echo "$b is still missing after apt-get install chromium chromium-driver" >&2; exit 1; }
done
