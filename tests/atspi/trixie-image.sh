#!/bin/sh
# Builds the Docker image in which tests/gui_atspi.rs also drives the window with Tails 7's
# toolkit: Debian 13's GTK 4.18 and libadwaita 1.7, with Dogtail, AT-SPI, Xvfb and a session
# bus. The window's binary (built here, on Debian 12) and the script are mounted at run time.
# No registry is needed (mmdebstrap's tarball, `docker import`). Prints the image tag; reuses
# the image when it exists (the tag changes with this recipe).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
HASH=$(sha256sum "$HERE/trixie-image.sh" | cut -c1-16)
TAG="tails-server-test/trixie-gui:$HASH"
if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "$TAG"
    exit 0
fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing (./scripts/deps installs it)" >&2; exit 1; }
# The Debian mirror apt uses here.
mirror=$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
         | head -n1 | tr -d ' ' || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
packages=libgtk-4-1,libadwaita-1-0,python3-dogtail,python3-pyatspi,gir1.2-atspi-2.0,at-spi2-core
packages=$packages,xvfb,xauth,dbus-daemon,dbus-bin,libglib2.0-bin,gsettings-desktop-schemas
packages=$packages,dconf-gsettings-backend,fonts-dejavu-core
mmdebstrap --quiet --mode=root --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    trixie - "deb $mirror trixie main" \
    | docker import --change 'LABEL org.tails-server.test=image' - "$TAG" >/dev/null
echo "$TAG"
