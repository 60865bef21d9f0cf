#!/usr/bin/env bash
# Installs what the chat page's browser test drives (tests/serve.rs): Debian's
# chromium and chromedriver, unless both are already on PATH. Needs apt (root);
# fails loudly otherwise: the test must not pass without a browser.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "scripts/setup-browser.sh: install chromium and chromedriver (Debian: chromium chromium-driver)" >&2
    exit 1
fi
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; }
command -v chromium >/dev/null && command -v chromedriver >/dev/null
