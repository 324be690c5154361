#!/usr/bin/env bash
# Build a release tidegate for an ARM gateway without Docker, linked against glibc
# 2.31 so it runs on Raspberry Pi OS bullseye as well as bookworm and newer.
#
#   cross/build.sh aarch64-unknown-linux-gnu
#   cross/build.sh armv7-unknown-linux-gnueabihf
#   cross/build.sh x86_64-unknown-linux-gnu
#
# cargo-zigbuild links with zig against a chosen glibc version (the `.2.31` suffix of
# the target) and compiles the C parts (bundled SQLite, ring) with zig's clang, so no
# cross gcc or target sysroot is needed. Missing tools are installed: the Rust target
# with rustup, zig from PyPI (ziglang), cargo-zigbuild from crates.io. The symbol
# versions of the result are checked against the floor. The last line printed is the
# binary's path. CARGO_TARGET_DIR is honoured.
set -euo pipefail

GLIBC_FLOOR=2.31
ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1

usage() {
    echo "usage: $0 aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf|x86_64-unknown-linux-gnu" >&2
    exit 2
}
[[ $# -eq 1 ]] || usage
target=$1
case "$target" in
    aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf | x86_64-unknown-linux-gnu) ;;
    *) echo "unsupported target: $target" >&2; usage ;;
esac

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

if ! rustup target list --installed | grep -qx "$target"; then
    echo "==> rustup target add $target" >&2
    rustup target add "$target" >&2
fi
if ! command -v zig >/dev/null && ! python3 -m ziglang version >/dev/null 2>&1; then
    echo "==> pip install ziglang==$ZIGLANG_VERSION" >&2
    python3 -m pip install --quiet "ziglang==$ZIGLANG_VERSION" >&2
fi
if ! command -v cargo-zigbuild >/dev/null; then
    echo "==> cargo install cargo-zigbuild $ZIGBUILD_VERSION" >&2
    cargo install --locked --quiet cargo-zigbuild --version "$ZIGBUILD_VERSION" >&2
fi

echo "==> cargo zigbuild --release --target $target.$GLIBC_FLOOR" >&2
start=$(date +%s)
cargo zigbuild --release --locked --target "$target.$GLIBC_FLOOR" >&2
elapsed=$(($(date +%s) - start))

target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
bin="$target_dir/$target/release/tidegate"
[[ -x "$bin" ]] || { echo "build finished but $bin is missing" >&2; exit 1; }

# The newest glibc symbol version the binary asks for must not pass the floor.
newest=$(readelf --version-info --wide "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
if [[ -z "$newest" ]]; then
    echo "no GLIBC symbol versions found in $bin" >&2
    exit 1
fi
if [[ $(printf '%s\n%s\n' "$newest" "$GLIBC_FLOOR" | sort -V | tail -1) != "$GLIBC_FLOOR" ]]; then
    echo "$bin needs GLIBC_$newest, newer than the floor $GLIBC_FLOOR" >&2
    exit 1
fi

echo "==> built in ${elapsed}s: $(stat -c %s "$bin") bytes, newest glibc symbol GLIBC_$newest (floor $GLIBC_FLOOR)" >&2
echo "$bin"
