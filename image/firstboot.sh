#!/bin/sh
# First boot of a massager image (put on the boot partition by scripts/build-image).
# Started by the kernel command line (systemd.run=, Raspberry Pi OS Bookworm) or by cloud-init's runcmd
# (images that use cloud-init; argument --cloud-init). Installs everything offline from the boot partition,
# enables the services and the hardware watchdog, applies a provisioning bundle if there is one, and removes
# itself. On a failure it leaves the hook in place so the next boot tries again; the log stays on the boot
# partition as massager-firstboot.log.
# MASSAGER_ROOT and MASSAGER_BOOT move the root file system and the boot partition (tests only).
set -eu

ROOT="${MASSAGER_ROOT:-}"
BOOT="${MASSAGER_BOOT:-/boot/firmware}"
PAYLOAD="$BOOT/massager"
VENV=/opt/massager/venv
MODE=firstrun
[ "${1:-}" = "--cloud-init" ] && MODE=cloud-init

exec >>"$BOOT/massager-firstboot.log" 2>&1
echo "massager first boot ($MODE) starting"

cd "$PAYLOAD"
# The FAT partition has no checksums of its own: refuse a damaged payload instead of installing it.
sha256sum -c --quiet SHA256SUMS

# Debian packages that are not on Raspberry Pi OS Lite (mosquitto and its libraries), offline.
set -- debs/*.deb
if [ -e "$1" ]; then
    echo "installing $# Debian packages"
    apt-get install -y --no-download "$@"
fi

# The firmware's user (in the gpio and i2c groups) first: files below belong to its group.
systemd-sysusers ${ROOT:+--root="$ROOT"} "$PAYLOAD/files/etc/sysusers.d/massager.conf"

# Units, broker config, watchdog setting, sysusers file, default config: MODE GROUP DEST per line.
while read -r mode group dest; do
    install -D -m "$mode" "files$dest" "$ROOT$dest"
    if [ "$group" != root ] && getent group "$group" >/dev/null; then chgrp "$group" "$ROOT$dest"; fi
done < install.list
install -d -m 0750 "$ROOT/var/lib/massager" "$ROOT/etc/massager/programs"

# The firmware in a venv that also sees the Pi's own lgpio / RPi.GPIO packages.
python3 -m venv --system-site-packages "$ROOT$VENV"
"$ROOT$VENV/bin/pip" install --no-index --no-cache-dir --find-links "$PAYLOAD/wheels" massager
install -d "$ROOT/usr/local/bin"
ln -sf "$VENV/bin/massager" "$ROOT/usr/local/bin/massager"

# Until the device is provisioned the broker has no users: nobody can connect.
[ -e "$ROOT/etc/mosquitto/massager.passwd" ] || install -m 0640 /dev/null "$ROOT/etc/mosquitto/massager.passwd"
[ -e "$ROOT/etc/mosquitto/massager.acl" ] || install -m 0640 /dev/null "$ROOT/etc/mosquitto/massager.acl"
if getent group mosquitto >/dev/null; then
    chgrp mosquitto "$ROOT/etc/mosquitto/massager.passwd" "$ROOT/etc/mosquitto/massager.acl"
fi

MASSAGER_ROOT="$ROOT" MASSAGER_BOOT="$BOOT" "$ROOT/usr/local/sbin/massager-apply-provision"

systemctl ${ROOT:+--root="$ROOT"} enable mosquitto.service massager-provision.service massager.service
# The phone remote's page: lighttpd under massager-remote.service; Debian's own lighttpd.service would take
# port 80 with its default site, so it stays off.
if [ -e "$ROOT/lib/systemd/system/lighttpd.service" ] || [ -e "$ROOT/usr/lib/systemd/system/lighttpd.service" ]; then
    systemctl ${ROOT:+--root="$ROOT"} disable lighttpd.service || true
fi
systemctl ${ROOT:+--root="$ROOT"} enable massager-remote.service

# Remove the hook: the payload, and the kernel command line arguments that started us.
cd /
rm -rf "$PAYLOAD"
if [ "$MODE" = firstrun ]; then
    sed -i -e 's| systemd\.run=[^ ]*||g' -e 's| systemd\.run_success_action=[^ ]*||g' \
        -e 's| systemd\.unit=kernel-command-line\.target||g' "$BOOT/cmdline.txt"
fi
sync
echo "massager first boot done; rebooting into the firmware"
