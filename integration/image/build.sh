#!/bin/sh
# Builds the image the integration suite runs tor in, from files of this machine: the
# Debian `tor` package's binaries and their shared libraries, plus a static busybox for a
# shell and an HTTP backend. No registry is needed (`docker import` of a tarball).
# Prints the image tag. Reuses the image when it exists; the tag changes with this
# recipe, the tor version and the busybox version, so a change rebuilds it.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
TOR=/usr/sbin/tor
GENCERT=/usr/bin/tor-gencert
BUSYBOX=/bin/busybox
for f in "$TOR" "$GENCERT" "$BUSYBOX"; do
    [ -x "$f" ] || { echo "missing $f: run scripts/deps (Debian packages tor, busybox-static)" >&2; exit 1; }
done
"$BUSYBOX" 2>&1 | head -1 | grep -q . || { echo "$BUSYBOX does not run" >&2; exit 1; }
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static "$BUSYBOX" || { echo "$BUSYBOX is not static: install busybox-static" >&2; exit 1; }

HASH=$( { cat "$HERE/build.sh"; "$TOR" --version; "$BUSYBOX" 2>&1 | head -1; } | sha256sum | cut -c1-16)
TAG="tails-server-test/tor:$HASH"
if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "$TAG"
    exit 0
fi

ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/usr/sbin" "$ROOT/usr/bin" "$ROOT/etc" "$ROOT/tmp" "$ROOT/net" "$ROOT/www"
chmod 1777 "$ROOT/tmp"
cp "$TOR" "$ROOT/usr/sbin/tor"
cp "$GENCERT" "$ROOT/usr/bin/tor-gencert"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in sh echo cat mkdir sleep awk chmod ls httpd rm cp kill; do
    ln -s busybox "$ROOT/bin/$applet"
done
# Shared libraries and the dynamic loader, at the paths the binaries ask for.
for lib in $( { ldd "$TOR"; ldd "$GENCERT"; } | awk '/=> \//{print $3} /^[[:space:]]*\//{print $1}' | sort -u); do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\n' > "$ROOT/etc/group"
tar -C "$ROOT" -c . | docker import \
    --change 'ENV PATH=/usr/sbin:/usr/bin:/bin' \
    --change 'LABEL org.tails-server.test=image' \
    - "$TAG" >/dev/null
echo "$TAG"
