#!/usr/bin/env bash
# Install, upgrade, remove and purge the amd64 package inside a Debian bullseye chroot
# (the oldest OS the gateways run) and check what an operator relies on: the tidegate
# user exists and is in dialout; an upgrade keeps an edited /etc/tidegate/tidegate.toml
# and leaves /var/lib/tidegate/buffer.db and its readings as they were; neither
# remove nor purge deletes the buffer. Needs root, debootstrap and a Debian mirror.
#
#   cross/deb-check.sh
#
# The chroot is built once under target/deb-check/ (TIDEGATE_DEB_CHROOT overrides).
set -euo pipefail

[[ $(id -u) -eq 0 ]] || { echo "cross/deb-check.sh needs root (chroot, debootstrap)" >&2; exit 1; }
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

work=$(mktemp -d)
cleanup() {
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$work"
}
root=${TIDEGATE_DEB_CHROOT:-$repo_root/target/deb-check/bullseye}
trap cleanup EXIT

# The package as built, and the same again under a higher version to upgrade to
# (cargo-deb may clear older packages from its output directory, so copy each).
target=x86_64-unknown-linux-gnu
built=$(cross/package.sh "$target" | tail -1)
version=$(dpkg-deb -W --showformat='${Version}' "$built")
old=$work/$(basename "$built")
cp "$built" "$old"
built=$(cross/package.sh "$target" --deb-version "${version%-*}-99" | tail -1)
new=$work/$(basename "$built")
cp "$built" "$new"
[[ "$old" != "$new" ]] || { echo "the two packages have the same name" >&2; exit 1; }

if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2
fi
if [[ ! -x "$root/usr/bin/apt-get" ]]; then
    echo "==> debootstrap bullseye into $root" >&2
    rm -rf "$root"
    mkdir -p "$root"
    debootstrap --variant=minbase bullseye "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log" >&2; echo "debootstrap failed" >&2; exit 1; }
fi
mount -t proc proc "$root/proc"
cp "$old" "$new" "$root/tmp/"
old_in=/tmp/$(basename "$old")
new_in=/tmp/$(basename "$new")

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
fail() { echo "deb-check: $*" >&2; exit 1; }
apt_in() {
    in_root apt-get -y -q "$@" >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "apt-get $* failed"; }
}

# A gateway that had an older tidegate and was purged must not confuse the check.
in_root sh -c 'dpkg --purge tidegate >/dev/null 2>&1 || true; rm -rf /var/lib/tidegate /etc/tidegate'

echo "==> install $(basename "$old")" >&2
apt_in install "$old_in"
in_root id tidegate >/dev/null || fail "no tidegate user after install"
in_root id -nG tidegate | tr ' ' '\n' | grep -qx dialout || fail "tidegate is not in dialout"
for f in /usr/bin/tidegate /usr/lib/systemd/system/tidegate.service /usr/lib/sysusers.d/tidegate.conf /etc/tidegate/tidegate.toml; do
    [[ -e "$root$f" ]] || fail "$f missing after install"
done
in_root tidegate --version >/dev/null || fail "the installed binary does not run on bullseye"

# What an operator does: edit the config, and let the agent fill the buffer.
echo '# edited on this gateway' >>"$root/etc/tidegate/tidegate.toml"
config_sum=$(sha256sum <"$root/etc/tidegate/tidegate.toml")
in_root install -d -o tidegate -g tidegate -m 0750 /var/lib/tidegate
sed -e 's|^state_dir = .*|state_dir = "/var/lib/tidegate"|' -e 's|^log_dir = .*|log_dir = ""|' \
    -e 's|^every = "30s"$|every = "1s"|' config/demo.toml >"$root/tmp/fast.toml"
in_root runuser -u tidegate -- timeout --preserve-status -s TERM 4s tidegate run --config /tmp/fast.toml 2>"$work/run.log" ||
    { cat "$work/run.log" >&2; fail "the agent did not run and stop cleanly as the tidegate user"; }
pending() { in_root tidegate buffer stats --config /tmp/fast.toml | awk '$1 == "pending" {print $2 + 0}'; }
before=$(pending)
[[ "$before" -gt 0 ]] || fail "no readings in the buffer to carry across the upgrade"
buffer_sum=$(sha256sum <"$root/var/lib/tidegate/buffer.db")

echo "==> upgrade to $(basename "$new")" >&2
apt_in install -o Dpkg::Options::=--force-confold "$new_in"
[[ $(in_root dpkg-query -W -f='${Version}' tidegate) == "${version%-*}-99" ]] || fail "the upgrade did not install"
[[ $(sha256sum <"$root/etc/tidegate/tidegate.toml") == "$config_sum" ]] || fail "the upgrade changed the edited config"
[[ $(sha256sum <"$root/var/lib/tidegate/buffer.db") == "$buffer_sum" ]] || fail "the upgrade changed buffer.db"
[[ $(pending) == "$before" ]] || fail "readings lost in the upgrade"
in_root id -nG tidegate | tr ' ' '\n' | grep -qx dialout || fail "tidegate left dialout in the upgrade"

echo "==> remove, then purge" >&2
apt_in remove tidegate
[[ -f "$root/etc/tidegate/tidegate.toml" ]] || fail "remove deleted the config"
in_root dpkg --purge tidegate >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "purge failed"; }
[[ $(sha256sum <"$root/var/lib/tidegate/buffer.db") == "$buffer_sum" ]] || fail "purge touched buffer.db"

echo "==> deb-check: install, upgrade (config and $before readings kept), remove and purge (buffer kept) on bullseye" >&2
