#!/usr/bin/env bash
# Install Chromium for tests/test_report.py's browser check (Debian/Ubuntu, as root; CI runs it).
# Does nothing when a Chromium is already on PATH.
set -euo pipefail
for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null; then echo "Chromium: $(command -v "$name")"; exit 0; fi
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_chromium.sh: needs root and apt-get (Debian/Ubuntu); install Chromium by hand" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q chromium
