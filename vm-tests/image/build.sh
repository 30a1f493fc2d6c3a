#!/bin/sh
# Builds the stand-in image for vm-tests: a Debian stand-in with Tails' paths, not Tails.
#
#   vm-tests/image/build.sh [--binary PATH] [--deb PATH] [--out DIR]
#   vm-tests/image/build.sh --system-only [--out DIR]
#
# Prints, as its last lines on stdout:
#   image=DIR      DIR/{vmlinuz,initrd.img,system.squashfs,persistent-template.raw,passphrase,mirror/}
#   payload=FILE   a squashfs holding PATH (default target/debug/tails-server) as
#                  /usr/local/bin/tails-server, and the --deb package (if given) as
#                  /usr/local/share/tails-server/tails-server.deb, laid over the system by the
#                  initramfs
#
# The image is cached under OUT/image-<hash of the recipe> (OUT defaults to target/vm-tests):
# the recipe is this script, rootfs/ and initramfs/. The payload is cached by the binary's hash.
# A warm run only hashes. Image builds run under `nice -n 10`.
#
# --system-only builds the part that mostly waits on the mirror and the disk (the Debian
# system, the package mirror, the squashfs) and stops before the boot that creates the
# Persistent Storage template, so it can run beside a compile; it prints system=DIR, and the
# next full run starts from there.
#
# What it imitates of Tails 7 (and only that; vm-tests/README.md has the table): Debian 13
# (trixie) with apt installing no Recommends; Tails' firewall (ferm, reloaded at every
# interface-up, with the session rules replayed); Tails' torrc facts (ControlPort
# 127.0.0.1:9052 and no control socket, DisableNetwork 1 until a connect step, Sandbox 1) with
# tor confined by AppArmor; a tps stand-in that keeps its features in memory; amnesia (uid
# 1000) logged in on a logind seat session; a read-only squashfs root under a tmpfs overlay,
# so only the Persistent Storage survives a reboot; a GPT partition labelled TailsData with
# LUKS2 on a removable USB stick; the guest side of the Tails test suite's remote shell. The
# catalog's programs are not installed, as on Tails: they come from a local package mirror
# (`mirror/`, served to the guest on 10.0.2.100 once its network is up) standing in for
# Debian's archive.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
binary="$repo/target/debug/tails-server"
deb=
system_only=0
out="$repo/target/vm-tests"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --deb) deb=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --system-only) system_only=1; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

log() { echo "build.sh: $*" >&2; }
die() { log "$*"; exit 1; }

for tool in mmdebstrap mksquashfs qemu-system-x86_64 qemu-img busybox dpkg-scanpackages; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y mmdebstrap squashfs-tools qemu-system-x86 qemu-utils busybox-static dpkg-dev)"
done
[ "$system_only" = 1 ] || [ -f "$binary" ] || die "no binary at $binary (cargo build first, or --binary PATH)"
[ -z "$deb" ] || [ -f "$deb" ] || die "no package at $deb (./scripts/package first)"

mkdir -p "$out"
exec 9>"$out/build.lock"
flock 9

# The recipe: every file of this directory that goes into the image, with its mode, and the
# busybox that goes into the initramfs.
recipe_hash=$(
    cd "$here"
    { find build.sh rootfs initramfs -type f | LC_ALL=C sort | while read -r f; do
          printf '%s %s ' "$f" "$(stat -c %a "$f")"; sha256sum < "$f"
      done
      sha256sum < "$(command -v busybox)"
    } | sha256sum | cut -c1-16
)
img="$out/image-$recipe_hash"
PASSPHRASE=stand-in-TailsData-1

# --- the payload: the project's binary -----------------------------------------------------
payload=
if [ "$system_only" = 0 ]; then
    bin_hash=$(cat "$binary" ${deb:+"$deb"} | sha256sum | cut -c1-16)
    payload="$out/payload-$bin_hash.squashfs"
    if [ ! -f "$payload" ]; then
        t0=$(date +%s)
        stage=$(mktemp -d "$out/payload.XXXXXX")
        mkdir -p "$stage/usr/local/bin"
        cp "$binary" "$stage/usr/local/bin/tails-server"
        chmod 755 "$stage/usr/local/bin/tails-server"
        if [ -n "$deb" ]; then
            mkdir -p "$stage/usr/local/share/tails-server"
            cp "$deb" "$stage/usr/local/share/tails-server/tails-server.deb"
        fi
        nice -n 10 mksquashfs "$stage" "$payload.tmp" -comp zstd -Xcompression-level 1 -noappend -quiet \
            -all-root >/dev/null
        mv "$payload.tmp" "$payload"
        rm -rf "$stage"
        # keep the three newest payloads
        ls -t "$out"/payload-*.squashfs 2>/dev/null | tail -n +4 | xargs -r rm -f
        log "payload $payload built in $(( $(date +%s) - t0 )) s"
    fi
fi

if [ -f "$img/complete" ]; then
    echo "image=$img"
    [ -z "$payload" ] || echo "payload=$payload"
    exit 0
fi

# --- the image: its Debian system ---------------------------------------------------------
t0=$(date +%s)
if [ -f "$img.tmp/system-built" ]; then
    log "the system of $img was built before ($(cat "$img.tmp/system-built")); the template next"
else
    log "building $img (cold; log in $img.log)"
    rm -rf "$img" "$img.tmp"
    mkdir -p "$img.tmp" "$out/apt-cache"
    root="$img.tmp/root"

    # The mirror apt is configured with here (deb822 or one-line sources).
    uris=$(grep -hE '^[[:space:]]*(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
              /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    mirror=$(printf '%s\n' "$uris" | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
    security=$(printf '%s\n' "$uris" | grep -oE 'https?://[^ ]+/debian-security/?( |$)' | head -n1 | tr -d ' ' || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    set -- "deb $mirror trixie main" "deb $mirror trixie-updates main"
    [ -z "$security" ] || set -- "$@" "deb $security trixie-security main"

    packages=systemd,systemd-sysv,dbus,polkitd,tor,cryptsetup-bin,udev,python3,linux-image-amd64
    packages=$packages,e2fsprogs,fdisk,kmod,acl,procps,iproute2,util-linux,adduser
    # The tps stand-in (Python with GLib, like Tails' own); an SSH client for amnesia.
    packages=$packages,python3-gi,gir1.2-glib-2.0,openssh-client
    # amnesia's login session (logind), for polkit's allow_active.
    packages=$packages,libpam-systemd
    # Tails' firewall (ferm), tor's AppArmor confinement, an interface to bring up (ifupdown
    # stands in for NetworkManager and its dispatcher scripts).
    packages=$packages,ferm,iptables,apparmor,ifupdown
    # The catalog's programs: not in Tails, so not in the image; in the local mirror instead.
    catalog_programs="mumble-server lighttpd infinoted openssh-server"
    # AppArmor: Debian's profiles other than tor's are removed (each costs seconds at boot under
    # TCG, and tails-server depends on tor's confinement only).
    {
    nice -n 10 mmdebstrap --mode=root --variant=minbase --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --skip=essential/unlink --skip=download/empty \
        --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
        --setup-hook="cp -a '$out/apt-cache/.' \"\$1/var/cache/apt/archives/\" 2>/dev/null || true" \
        --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo MODULES=list > "$1/etc/initramfs-tools/conf.d/stand-in"' \
        --customize-hook="chroot \"\$1\" apt-get -q -y --no-install-recommends --download-only install $catalog_programs" \
        --customize-hook="chroot \"\$1\" apt-get -q -s --no-install-recommends install $catalog_programs > '$img.tmp/mirror.list'" \
        --customize-hook="cp -u \"\$1\"/var/cache/apt/archives/*.deb '$out/apt-cache/' 2>/dev/null || true" \
        --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/etc/apt/sources.list; rm -rf "$1"/var/lib/apt/lists/*' \
        --customize-hook="cp -a '$here/rootfs/.' \"\$1/\"" \
        --customize-hook='chroot "$1" useradd -m -u 1000 -U -s /bin/bash -c "amnesia" amnesia' \
        --customize-hook='chroot "$1" useradd --system -U -M -d /nonexistent -s /usr/sbin/nologin tails-persistent-storage' \
        --customize-hook='echo localhost > "$1/etc/hostname"; mkdir -p "$1/live/persistence"' \
        --customize-hook='chroot "$1" systemctl enable tails-autotest-remote-shell.service tails-stand-in-unlock.service tails-stand-in-create.service tails-stand-in-additional-software.service tails-stand-in-tpsd.service ferm.service apparmor.service' \
        --customize-hook='chroot "$1" chown -R debian-tor:debian-tor /etc/tor' \
        --customize-hook='cd "$1/etc/apparmor.d" && for p in *; do [ -f "$p" ] && [ "$p" != system_tor ] && rm -f "$p"; done; true' \
        --customize-hook='chroot "$1" sh -c "update-alternatives --set iptables /usr/sbin/iptables-legacy && update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy" >/dev/null' \
        --customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-timesyncd.service 2>/dev/null || true' \
        --customize-hook='cd "$1/lib/modules/"*/kernel && rm -rf sound drivers/gpu drivers/media drivers/infiniband drivers/net/wireless drivers/staging drivers/bluetooth drivers/isdn net/wireless net/bluetooth net/mac80211 drivers/iio drivers/hid drivers/input/touchscreen' \
        --customize-hook='chroot "$1" sh -c "depmod \$(ls /lib/modules)"' \
        --customize-hook='rm -f "$1"/boot/initrd.img-*' \
        trixie "$root" "$@"
    } > "$img.log" 2>&1 || die "mmdebstrap failed; see $img.log"
    log "mmdebstrap done after $(( $(date +%s) - t0 )) s"

    # The local mirror: the catalog's programs and what they need beyond the image, as apt chose
    # them for this image (no Recommends), with a flat repository's index.
    mkdir -p "$img.tmp/mirror"
    awk '$1 == "Inst" { v = $3; gsub(/[()]/, "", v); print $2, v }' "$img.tmp/mirror.list" > "$img.tmp/mirror.wanted"
    [ -s "$img.tmp/mirror.wanted" ] || die "apt chose no package for the mirror; see $img.tmp/mirror.list"
    while read -r name version; do
        found=
        for f in "$out/apt-cache/${name}"_*.deb; do
            [ -f "$f" ] || continue
            if [ "$(dpkg-deb -f "$f" Package)" = "$name" ] && [ "$(dpkg-deb -f "$f" Version)" = "$version" ]; then
                cp "$f" "$img.tmp/mirror/"; found=1; break
            fi
        done
        [ -n "$found" ] || die "the mirror's $name $version was not downloaded"
    done < "$img.tmp/mirror.wanted"
    rm -f "$img.tmp/mirror.wanted"
    (cd "$img.tmp/mirror" && dpkg-scanpackages --multiversion . 2>/dev/null > Packages) \
        || die "dpkg-scanpackages failed for the mirror"
    for p in $catalog_programs; do
        grep -qx "Package: $p" "$img.tmp/mirror/Packages" || die "the mirror has no $p"
    done
    log "mirror: $(ls "$img.tmp/mirror" | grep -c '\.deb$') packages, $(du -sm "$img.tmp/mirror" | cut -f1) MiB"

    kver=$(ls "$root/lib/modules")
    cp "$root/boot/vmlinuz-$kver" "$img.tmp/vmlinuz"

    # initramfs: busybox, the init script and the modules needed to reach the squashfs root.
    ird="$img.tmp/initramfs"
    mkdir -p "$ird/bin" "$ird/modules"
    cp "$(command -v busybox)" "$ird/bin/busybox"
    cp "$here/initramfs/init" "$ird/init"
    : > "$ird/modules.list"
    chroot "$root" modprobe -a --show-depends -S "$kver" virtio_pci virtio_blk squashfs overlay \
        | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' | while read -r ko; do
            name=$(basename "$ko")
            case "$name" in
                *.xz) name=${name%.xz}; xz -dc "$root$ko" > "$ird/modules/$name" ;;
                *.zst) name=${name%.zst}; zstd -qdc "$root$ko" > "$ird/modules/$name" ;;
                *) cp "$root$ko" "$ird/modules/$name" ;;
            esac
            echo "$name" >> "$ird/modules.list"
        done
    [ -s "$ird/modules.list" ] || log "note: no modules needed in the initramfs (all built in)"
    (cd "$ird" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$img.tmp/initrd.img"
    rm -rf "$ird"

    nice -n 10 mksquashfs "$root" "$img.tmp/system.squashfs" -comp zstd -Xcompression-level 3 -noappend -no-progress \
        -e boot 2>&1 >/dev/null | grep -v "Unrecognised xattr prefix system.posix_acl" >&2 || true
    rm -rf "$root"
    echo "$kver" > "$img.tmp/kernel-version"
    log "squashfs $(du -m "$img.tmp/system.squashfs" | cut -f1) MiB after $(( $(date +%s) - t0 )) s"
    date -u +%FT%TZ > "$img.tmp/system-built"
fi
if [ "$system_only" = 1 ]; then
    echo "system=$img.tmp"
    exit 0
fi

# --- the image: the Persistent Storage template ----------------------------------------------

# The Persistent Storage template: a fresh 1 GiB stick with a TailsData partition, created by
# the image itself (tails-stand-in-persistence create-at-boot) so the tests start from a volume
# made as they will find it. Each test runs on a qcow2 overlay of it. 1 GiB (a real one has
# gigabytes): g's four programs' data images take a share of the free space each.
rm -f "$img.tmp/persistent-template.raw" "$img.tmp/create-console.log"
truncate -s 1G "$img.tmp/persistent-template.raw"
accel="tcg,tb-size=64"
if [ -w /dev/kvm ] && grep -qE 'vmx|svm' /proc/cpuinfo; then accel="kvm"; fi
timeout 400 nice -n 10 qemu-system-x86_64 -accel "$accel" -m 512 -smp 2 -display none -monitor none \
    -no-reboot -nic none \
    -chardev "file,id=con,path=$img.tmp/create-console.log" -serial chardev:con \
    -kernel "$img.tmp/vmlinuz" -initrd "$img.tmp/initrd.img" \
    -append "console=ttyS0 loglevel=4 panic=-1 tails_stand_in_create=$PASSPHRASE" \
    -drive "file=$img.tmp/system.squashfs,if=virtio,format=raw,readonly=on" \
    -device qemu-xhci -drive "if=none,id=stick,file=$img.tmp/persistent-template.raw,format=raw" \
    -device usb-storage,drive=stick,removable=on \
    || die "creating the persistent template failed (QEMU); see $img.tmp/create-console.log"
grep -q 'TAILS-STAND-IN-CREATE: OK' "$img.tmp/create-console.log" \
    || die "creating the persistent template failed; see $img.tmp/create-console.log"
printf '%s\n' "$PASSPHRASE" > "$img.tmp/passphrase"
date -u +%FT%TZ > "$img.tmp/complete"
mv "$img.tmp" "$img"
mv "$img.log" "$img/build.log"
log "image built in $(( $(date +%s) - t0 )) s (cold)"
echo "image=$img"
[ -z "$payload" ] || echo "payload=$payload"
