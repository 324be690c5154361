#!/usr/bin/env bash
# Prove an ARM build runs on the oldest gateway OS it supports: under qemu user
# emulation, against Debian bullseye's glibc 2.31 (Raspberry Pi OS bullseye's), run
# `--version`, `check-config` and a short `run` of config/demo.toml, then a run that
# samples every second and must leave readings in the buffer.
#
#   cross/qemu-check.sh aarch64-unknown-linux-gnu "$(cross/build.sh aarch64-unknown-linux-gnu | tail -1)"
#
# Needs qemu-user (installed from Debian's packages when missing and run as root) and
# the bullseye libc6 package of the target's architecture, fetched from the Debian
# archive, checked against the SHA-256 its Packages index gives and unpacked once
# into target/sysroot/ (TIDEGATE_SYSROOT_DIR overrides).
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 TARGET BINARY" >&2; exit 2; }
target=$1
bin=$(realpath "$2")
case "$target" in
    aarch64-unknown-linux-gnu) qemu=qemu-aarch64 debarch=arm64 ;;
    armv7-unknown-linux-gnueabihf) qemu=qemu-arm debarch=armhf ;;
    *) echo "unsupported target: $target" >&2; exit 2 ;;
esac
[[ -x "$bin" ]] || { echo "no binary at $bin" >&2; exit 1; }

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if ! command -v "$qemu" >/dev/null; then
    if command -v "$qemu-static" >/dev/null; then
        qemu=$qemu-static
    elif [[ $(id -u) -eq 0 ]]; then
        echo "==> apt-get install qemu-user" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-user >&2 ||
            { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-user >&2; }
    else
        echo "missing $qemu (sudo apt-get install qemu-user)" >&2
        exit 1
    fi
fi

# Debian bullseye's libc6 for the architecture: the glibc the gateways' oldest OS has.
sysroot=${TIDEGATE_SYSROOT_DIR:-$repo_root/target/sysroot}/bullseye-$debarch
if [[ ! -e "$sysroot/lib/ld-linux-aarch64.so.1" && ! -e "$sysroot/lib/ld-linux-armhf.so.3" ]]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    fetched=
    for mirror in http://deb.debian.org/debian http://archive.debian.org/debian; do
        if curl -fsS --max-time 60 "$mirror/dists/bullseye/main/binary-$debarch/Packages.xz" -o "$work/Packages.xz"; then
            fetched=$mirror
            break
        fi
    done
    [[ -n "$fetched" ]] || { echo "cannot reach a Debian archive with bullseye" >&2; exit 1; }
    xz -dc "$work/Packages.xz" >"$work/Packages"
    entry=$(awk '/^Package: libc6$/ {p = 1} p && /^$/ {exit} p' "$work/Packages")
    file=$(awk '/^Filename:/ {print $2}' <<<"$entry")
    sum=$(awk '/^SHA256:/ {print $2}' <<<"$entry")
    [[ -n "$file" && -n "$sum" ]] || { echo "no libc6 in bullseye's $debarch index" >&2; exit 1; }
    echo "==> $fetched/$file" >&2
    curl -fsS --max-time 300 "$fetched/$file" -o "$work/libc6.deb"
    echo "$sum  $work/libc6.deb" | sha256sum -c --quiet
    rm -rf "$sysroot"
    mkdir -p "$sysroot"
    dpkg-deb -x "$work/libc6.deb" "$sysroot"
fi
glibc=$(ls "$sysroot"/lib/*/libc-*.so 2>/dev/null | sed -E 's/.*libc-([0-9.]+)\.so/\1/' | head -1)

run() { "$qemu" -L "$sysroot" "$bin" "$@"; }

echo "==> $qemu, glibc ${glibc:-?} from bullseye: $(run --version)" >&2

scratch=$(mktemp -d)
trap 'rm -rf "$scratch" ${work:+"$work"}' EXIT
cp "$repo_root/config/demo.toml" "$scratch/demo.toml"
cd "$scratch"

run check-config --config demo.toml >/dev/null

# The demo as shipped: starts, runs its jobs, stops cleanly on SIGTERM.
timeout --preserve-status -s TERM 8s "$qemu" -L "$sysroot" "$bin" run --config demo.toml 2>run.log ||
    { cat run.log >&2; echo "demo run did not exit 0" >&2; exit 1; }
grep -q "agent started" run.log || { cat run.log >&2; echo "demo run never started" >&2; exit 1; }
grep -q "stopped" run.log || { cat run.log >&2; echo "demo run did not stop cleanly" >&2; exit 1; }

# The same sensors sampled every second: readings must reach the buffer.
sed 's/^every = "30s"$/every = "1s"/' demo.toml >fast.toml
grep -q '^every = "1s"$' fast.toml || { echo "demo.toml no longer has the sample interval this check edits" >&2; exit 1; }
timeout --preserve-status -s TERM 8s "$qemu" -L "$sysroot" "$bin" run --config fast.toml 2>fast.log ||
    { cat fast.log >&2; echo "sampling run did not exit 0" >&2; exit 1; }
pending=$(run buffer stats --config fast.toml | awk '$1 == "pending" {print $2 + 0}')
[[ "${pending:-0}" -gt 0 ]] || { run buffer stats --config fast.toml >&2; cat fast.log >&2; echo "no readings in the buffer" >&2; exit 1; }

echo "==> $target under $qemu on glibc ${glibc:-?}: check-config ok, demo run ok, $pending readings stored" >&2
