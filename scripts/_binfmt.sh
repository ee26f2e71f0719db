# Sourced by scripts/make-base and scripts/bootstrap: lets this host run arm64 programs (mmdebstrap's
# maintainer scripts) through qemu-user-static and binfmt_misc. Needs root on a non-arm64 host.

ensure_arm64_binfmt() {
    case "$(uname -m)" in aarch64|arm64) return 0 ;; esac
    local dir=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    if [ ! -e "$dir/register" ]; then
        mount binfmt_misc -t binfmt_misc "$dir" || return 1
    fi
    if [ ! -e "$dir/qemu-aarch64" ]; then
        [ -f "$conf" ] || { echo "no $conf: apt-get install qemu-user-static" >&2; return 1; }
        # The F flag opens the interpreter now, so it also works inside mmdebstrap's chroot.
        grep -v '^#' "$conf" | head -n 1 > "$dir/register" || return 1
    fi
    grep -q '^enabled' "$dir/qemu-aarch64"
}
