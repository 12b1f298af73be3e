#!/usr/bin/env bash
# Headless Chromium for the tests that look at the HTML pages (evaluation report, monitoring page).
# Installed from Debian's packages when missing and this user may (root with apt-get); otherwise
# those tests skip and say so. Never fails the caller: a page test is worth having, not a blocker.
set -uo pipefail
command -v chromium >/dev/null && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "==> headless Chromium not installed (needs root and apt-get): the browser checks will skip"
  exit 0
fi
echo "==> installing Debian's chromium for the browser checks (log: /tmp/fmnist-chromium-apt.log)"
if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } \
    >/tmp/fmnist-chromium-apt.log 2>&1; then
  echo "==> chromium could not be installed (see /tmp/fmnist-chromium-apt.log): the browser checks will skip"
fi
exit 0
