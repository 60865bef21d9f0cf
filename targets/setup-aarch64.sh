#!/usr/bin/env bash
# Installs what cross-building and emulating aarch64 needs on Debian/Ubuntu x86-64:
# Debian's rustc-web with its aarch64 standard library (rustup cannot fetch targets
# offline), the aarch64 GNU toolchain, and qemu-user. Idempotent.
set -euo pipefail
need=()
[ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] || need+=(rustc-web cargo-web)
[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] || need+=(libstd-rust-web-dev:arm64)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
# The runtime loader and libc the tests run with under qemu (see .cargo/config.toml).
[ -e /lib/ld-linux-aarch64.so.1 ] || need+=(libc6:arm64)
if [ ${#need[@]} -gt 0 ]; then
    echo "targets/setup-aarch64.sh: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi
