#!/usr/bin/env bash
# Build the Debian package of tidegate for TARGET: the binary from cross/build.sh
# (glibc 2.31 floor), the systemd unit, the sysusers entry and the example config,
# laid out by [package.metadata.deb] in Cargo.toml. The last line printed is the
# .deb's path.
#
#   cross/package.sh aarch64-unknown-linux-gnu       # tidegate_<version>-1_arm64.deb
#   cross/package.sh armv7-unknown-linux-gnueabihf   # ..._armhf.deb
#   cross/package.sh x86_64-unknown-linux-gnu        # ..._amd64.deb
#
# Extra arguments go to cargo-deb (e.g. --deb-version 0.1.1-1). cargo-deb is
# installed from crates.io when missing.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0

[[ $# -ge 1 ]] || { echo "usage: $0 TARGET [cargo-deb arguments]" >&2; exit 2; }
target=$1
shift
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

"$repo_root/cross/build.sh" "$target" >/dev/null

if ! command -v cargo-deb >/dev/null; then
    echo "==> cargo install cargo-deb $CARGO_DEB_VERSION" >&2
    cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" >&2
fi

# The binary is built and stripped already (cargo-deb would rebuild it without zig
# and strip it with the host's binutils, which cannot read an ARM binary).
deb=$(cargo deb --no-build --no-strip --target "$target" "$@" | tail -1)
[[ -f "$deb" ]] || { echo "cargo-deb printed no package path" >&2; exit 1; }
echo "==> $(dpkg-deb -W --showformat='${Package} ${Version} ${Architecture}' "$deb"): $(stat -c %s "$deb") bytes" >&2
echo "$deb"
