#!/usr/bin/env bash
# One command for both packages: builds the release binaries, then the .deb
# (debhelper) and the .rpm (rpmbuild) into target/packages/, and runs lintian
# and rpmlint on them. Tags that remain are explained in packaging/README.md;
# the run fails on any lintian error or rpmlint error.
#   packaging/build.sh            # as root or not; needs scripts/setup.sh's packages
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=$repo/target/packages
log() { printf 'packaging: %s\n' "$*" >&2; }

log "cargo build --release"
cargo build --release --quiet

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/restrictd-$version
staged=$src/staged
mkdir -p "$staged/man"
cp target/release/restrictd target/release/restrictctl target/release/libpam_restrict.so "$staged/"
cp packaging/systemd/restrictd.service packaging/restrictd.yaml \
    packaging/dbus/org.restrictd.Daemon1.conf packaging/dbus/org.restrictd.Daemon1.service \
    examples/netpolicy.yaml README.md ARCHITECTURE.md \
    LICENSE-MIT LICENSE-APACHE LICENSE-GPL-2.0 "$staged/"
cp packaging/man/*.[58] "$staged/man/"
strip --strip-unneeded "$staged/restrictd" "$staged/restrictctl" "$staged/libpam_restrict.so"

rm -rf "$out"
mkdir -p "$out"

log "building the .deb"
cp -r packaging/debian "$src/debian"
cp packaging/systemd/restrictd.service "$src/debian/restrictd.service"
(cd "$src" && dpkg-buildpackage -b -us -uc >"$work/deb.log" 2>&1) || {
    tail -40 "$work/deb.log" >&2
    exit 1
}
mv "$work"/restrictd_"$version"-*_amd64.deb "$out/"

log "building the .rpm"
rpmbuild -bb --quiet \
    --define "_topdir $work/rpm" \
    --define "stagedir $staged" \
    --define "version_from_cargo $version" \
    packaging/rpm/restrictd.spec >"$work/rpm.log" 2>&1 || {
    tail -40 "$work/rpm.log" >&2
    exit 1
}
mv "$work"/rpm/RPMS/x86_64/restrictd-"$version"-*.rpm "$out/"

log "lintian"
lintian --fail-on error --suppress-tags-from-file packaging/lintian-accepted "$out"/*.deb
log "rpmlint"
rpmlint -r packaging/rpmlintrc "$out"/*.rpm

ls -l "$out"
