#!/usr/bin/env bash
# Cross-build tidegate for an ARM gateway with Debian's cross gcc: no Docker, no
# committed .cargo/config.toml (the linker goes in through the environment, so a
# plain host `cargo build` never sees it).
#
#   cross/build-native.sh aarch64-unknown-linux-gnu
#   cross/build-native.sh armv7-unknown-linux-gnueabihf
#
# Honours CARGO_TARGET_DIR. See cross/README.md for the glibc floor this implies.
set -euo pipefail

usage() {
    echo "usage: $0 aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf" >&2
    exit 2
}

[[ $# -eq 1 ]] || usage
target=$1

case "$target" in
    aarch64-unknown-linux-gnu)
        gcc=aarch64-linux-gnu-gcc
        packages=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
        ;;
    armv7-unknown-linux-gnueabihf)
        gcc=arm-linux-gnueabihf-gcc
        packages=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
        ;;
    *)
        echo "unsupported target: $target" >&2
        usage
        ;;
esac

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

# The cross C toolchain: bundled SQLite is C, and the final link needs a target libc.
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "==> installing ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The Rust standard library for the target.
if ! rustup target list --installed | grep -qx "$target"; then
    echo "==> rustup target add $target"
    rustup target add "$target"
fi

# CARGO_TARGET_<TRIPLE>_LINKER: the triple upper-cased with '-' as '_'.
triple_var=$(echo "$target" | tr '[:lower:]-' '[:upper:]_')
export "CARGO_TARGET_${triple_var}_LINKER=$gcc"
# The cc crate finds CC_<target> on its own for these triples, but say it plainly.
export "CC_${target//-/_}=$gcc"

echo "==> cargo build --release --target $target (linker $gcc)"
start=$(date +%s)
cargo build --release --locked --target "$target"
elapsed=$(($(date +%s) - start))

target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
bin="$target_dir/$target/release/tidegate"
[[ -x "$bin" ]] || { echo "build finished but $bin is missing" >&2; exit 1; }

echo "==> built in ${elapsed}s"
echo "binary: $bin"
echo "size:   $(stat -c %s "$bin") bytes"
file "$bin"
