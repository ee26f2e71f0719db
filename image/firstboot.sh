#!/bin/sh
# First boot of a massager image (put on the boot partition by scripts/build-image).
# Started by the kernel command line (systemd.run=, Raspberry Pi OS Bookworm) or by cloud-init's runcmd
# (images that use cloud-init; argument --cloud-init). Installs everything offline from the boot partition,
# enables the services and the hardware watchdog, applies a provisioning bundle if there is one, and removes
# itself. Every step can run again: a failure or a power cut leaves the hook in place (and the firmware not
# enabled), so the next power-on starts over and finishes the job; nothing runs half-installed.
# On a failure the unit stays on (systemd.run_failure_action=none), the board's status LED (ACT) blinks
# fast, and the log stays on the boot partition as massager-firstboot.log. Progress goes to the console.
# MASSAGER_ROOT, MASSAGER_BOOT, MASSAGER_CONSOLE, MASSAGER_LEDS move the root file system, the boot
# partition, the console and the LED class directory (tests only).
set -eu

ROOT="${MASSAGER_ROOT:-}"
BOOT="${MASSAGER_BOOT:-/boot/firmware}"
CONSOLE="${MASSAGER_CONSOLE:-/dev/console}"
LEDS="${MASSAGER_LEDS:-/sys/class/leds}"
PAYLOAD="$BOOT/massager"
OPT=/opt/massager
MODE=firstrun
[ "${1:-}" = "--cloud-init" ] && MODE=cloud-init

step() {
    echo "massager first boot: $*"
    { echo "massager first boot: $*" > "$CONSOLE"; } 2>/dev/null || true
}

# Blink code "first boot failed": the status LED (ACT) flashes 5 times a second until the power goes off.
blink_failure() {
    for led in "$LEDS/ACT" "$LEDS/led0"; do
        if [ -d "$led" ]; then
            { echo timer > "$led/trigger" && echo 100 > "$led/delay_on" && echo 100 > "$led/delay_off"; } \
                2>/dev/null || true
        fi
    done
}

on_exit() {
    status=$?
    if [ "$status" != 0 ]; then
        step "FAILED (exit status $status): the unit stays on with the status LED blinking fast; the next" \
            "power-on tries again; the log is massager-firstboot.log on the boot partition"
        blink_failure
        sync || true
    fi
}

exec >>"$BOOT/massager-firstboot.log" 2>&1
trap on_exit EXIT
step "starting ($MODE)"

cd "$PAYLOAD"
# The FAT partition has no checksums of its own: refuse a damaged payload instead of installing it.
sha256sum -c --quiet SHA256SUMS

# A power cut during an earlier attempt can leave dpkg half-way through: finish that first.
dpkg ${ROOT:+--root="$ROOT"} --configure -a

# Debian packages that are not on the base image (mosquitto and its libraries), offline. apt takes local
# files only by absolute path; it has nothing to download then (and --no-download would refuse the paths).
set -- "$PAYLOAD"/debs/*.deb
if [ -e "$1" ]; then
    step "installing $# Debian packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
fi

# The firmware's user (in the gpio and i2c groups) first: files below belong to its group.
step "creating the firmware's user"
systemd-sysusers ${ROOT:+--root="$ROOT"} "$PAYLOAD/files/etc/sysusers.d/massager.conf"

# Units, broker config, watchdog setting, sysusers file, default config: MODE GROUP DEST per line.
step "installing units and configuration"
while read -r mode group dest; do
    install -D -m "$mode" "files$dest" "$ROOT$dest"
    if [ "$group" != root ] && getent group "$group" >/dev/null; then chgrp "$group" "$ROOT$dest"; fi
done < install.list
install -d -m 0750 "$ROOT/var/lib/massager"
# User programs are not secret, and the firmware (user massager) must read them.
install -d -m 0755 "$ROOT/etc/massager/programs"
chmod 0755 "$ROOT/etc/massager/programs"

# The firmware in its own venv with every wheel of the payload, the pin backend (lgpio) included: nothing
# comes from the base's system packages. Rebuilt from scratch on every attempt. Laid out as field updates
# expect (docs/technician.md "Field updates"): the release in $OPT/releases/<version> (COMPLETE written
# last), $OPT/current pointing at it (a new link renamed over the old), $OPT/venv -> current/venv.
set -- "$PAYLOAD"/wheels/massager-*.whl
VERSION="${1##*/massager-}"
VERSION="${VERSION%%-*}"
RELEASE="$OPT/releases/$VERSION"
VENV="$RELEASE/venv"
step "installing the firmware $VERSION into $VENV"
rm -rf "$ROOT$RELEASE"
python3 -m venv "$ROOT$VENV"
"$ROOT$VENV/bin/pip" install --no-index --no-cache-dir --find-links "$PAYLOAD/wheels" "$PAYLOAD"/wheels/*.whl
# lgpio makes its notification pipe in LG_WD (default: the current folder, here the FAT partition).
LG_WD="${TMPDIR:-/tmp}" "$ROOT$VENV/bin/python" -c "import lgpio, gpiozero, device.cli"
sync
echo "$VERSION" > "$ROOT$RELEASE/COMPLETE"
ln -sfn "releases/$VERSION" "$ROOT$OPT/current.new"
mv -T "$ROOT$OPT/current.new" "$ROOT$OPT/current"
if [ -d "$ROOT$OPT/venv" ] && [ ! -L "$ROOT$OPT/venv" ]; then rm -rf "$ROOT$OPT/venv"; fi
ln -sfn current/venv "$ROOT$OPT/venv"
install -d "$ROOT/usr/local/bin"
ln -sf "$OPT/venv/bin/massager" "$ROOT/usr/local/bin/massager"
# Field updates: the firmware writes its requests and health marks here, the installer (root) its progress.
install -d -m 0750 "$ROOT/var/lib/massager/update"
if getent passwd massager >/dev/null; then chown massager:massager "$ROOT/var/lib/massager" "$ROOT/var/lib/massager/update"; fi
if ! ls "$ROOT/etc/massager/update-keys/"*.pem >/dev/null 2>&1; then
    step "no trusted update keys in /etc/massager/update-keys: every update bundle will be refused"
fi

# Until the device is provisioned the broker has no users: nobody can connect.
[ -e "$ROOT/etc/mosquitto/massager.passwd" ] || install -m 0640 /dev/null "$ROOT/etc/mosquitto/massager.passwd"
[ -e "$ROOT/etc/mosquitto/massager.acl" ] || install -m 0640 /dev/null "$ROOT/etc/mosquitto/massager.acl"
if getent group mosquitto >/dev/null; then
    chgrp mosquitto "$ROOT/etc/mosquitto/massager.passwd" "$ROOT/etc/mosquitto/massager.acl"
fi

step "applying the provisioning bundle (if any)"
MASSAGER_ROOT="$ROOT" MASSAGER_BOOT="$BOOT" "$ROOT/usr/local/sbin/massager-apply-provision"

systemctl ${ROOT:+--root="$ROOT"} enable mosquitto.service massager-provision.service massager.service
systemctl ${ROOT:+--root="$ROOT"} enable massager-update.path massager-update-check.timer
# The phone remote's page: lighttpd under massager-remote.service, when the image carries lighttpd
# (build-image --debs with lighttpd and lighttpd-mod-deflate); Debian's own lighttpd.service would take
# port 80 with its default site, so it stays off.
if [ -x "$ROOT/usr/sbin/lighttpd" ]; then
    if [ -e "$ROOT/lib/systemd/system/lighttpd.service" ] || [ -e "$ROOT/usr/lib/systemd/system/lighttpd.service" ]; then
        systemctl ${ROOT:+--root="$ROOT"} disable lighttpd.service || true
    fi
    systemctl ${ROOT:+--root="$ROOT"} enable massager-remote.service
else
    step "lighttpd is not installed: the phone remote's page stays off (add it with build-image --debs)"
fi
sync

# Remove the hook: first the kernel command line arguments that start us (written whole, then renamed),
# then the payload. A power cut in between only leaves the payload's space unused.
step "removing the first-boot hook"
cd /
if [ "$MODE" = firstrun ]; then
    sed -e 's| systemd\.run=[^ ]*||g' -e 's| systemd\.run_success_action=[^ ]*||g' \
        -e 's| systemd\.run_failure_action=[^ ]*||g' \
        -e 's| systemd\.unit=kernel-command-line\.target||g' "$BOOT/cmdline.txt" > "$BOOT/cmdline.txt.new"
    sync
    mv "$BOOT/cmdline.txt.new" "$BOOT/cmdline.txt"
    sync
fi
rm -rf "$PAYLOAD"
sync
step "done; rebooting into the firmware"
