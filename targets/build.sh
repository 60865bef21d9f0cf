#!/usr/bin/env bash
# targets/build.sh TARGET: release binaries (phiq, phiq-quantize) for TARGET, stripped,
# with their size and dynamic dependencies printed. Output: target/<TARGET>/release/.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: targets/build.sh TARGET}
case "$target" in
x86_64-unknown-linux-gnu)
    # Static, as the aarch64 binaries (.cargo/config.toml says why); set here and not
    # there because a host-wide crt-static would also apply to proc-macro builds.
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --locked --target "$target" -p phiq -p phiq-quantize
    out=target/$target/release
    readelf=readelf
    ;;
aarch64-unknown-linux-gnu)
    targets/setup-aarch64.sh
    # Debian's toolchain, not rustup's (which has no aarch64 standard library here).
    RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/debian \
        /usr/bin/cargo build --release --locked --target "$target" -p phiq -p phiq-quantize
    out=target/debian/$target/release
    readelf=aarch64-linux-gnu-readelf
    ;;
*)
    echo "targets/build.sh: unknown target $target (see targets/README.md)" >&2
    exit 2
    ;;
esac
for bin in phiq phiq-quantize; do
    f=$out/$bin
    echo "$f: $(stat -c %s "$f") bytes, $(file -b "$f" | cut -d, -f1-2)"
    needed=$($readelf -d "$f" | grep NEEDED || true)
    if [ -z "$needed" ]; then
        echo "    no shared libraries (statically linked)"
    else
        echo "$needed" | sed 's/^/    /'
    fi
    # The edge binaries may need glibc and nothing else (issue 6).
    extra=$(echo "$needed" | grep NEEDED | grep -vE '\[(libc|libm|libpthread|libdl|librt)\.so|\[ld-linux' || true)
    if [ -n "$extra" ]; then
        echo "targets/build.sh: $f needs shared libraries beyond glibc:" >&2
        echo "$extra" >&2
        exit 1
    fi
done
