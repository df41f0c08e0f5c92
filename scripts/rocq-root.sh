#!/usr/bin/env bash
# scripts/rocq-root.sh SUITE DIR [FOLDER ...]
#
# Another Debian release's Rocq on this machine: makes a Debian root of SUITE in DIR/root if it
# is missing (bookworm: Coq 8.16 + MathComp 1.15; trixie: Coq 8.20 + MathComp 2.3 +
# Hierarchy-Builder; forky: Rocq 9.2 + Stdlib), binds the folders a run uses at the same
# absolute paths inside it (FOLDER ..., default: /tmp, this checkout and $ROCQCOT_HOME), writes
# one wrapper per Rocq executable into DIR/bin (beside the root: the root's own /bin is its
# /usr/bin) and prints that folder as its last line, for
# `--rocq-bin` or ROCQCOT_ROCQ_BIN. Idempotent: a second call only checks the mounts (seconds).
# Needs root (debootstrap, chroot, mount --bind).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 bookworm|trixie|forky DIR [FOLDER ...]" >&2
    exit 2
fi
SUITE=$1
DIR=$(realpath -m "$2")
ROOT="$DIR/root"
shift 2
PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"

case "$SUITE" in
    bookworm | trixie)
        DEBOOTSTRAP_SCRIPT=""
        PACKAGES="coq libcoq-mathcomp make"
        APT_OPTIONS=()
        ;;
    forky)
        # bookworm's debootstrap has no forky script; sid's works. forky's Release files may be
        # past their validity date on a snapshot mirror.
        DEBOOTSTRAP_SCRIPT=/usr/share/debootstrap/scripts/sid
        PACKAGES="coq libcoq-stdlib make"
        APT_OPTIONS=(-o Acquire::Check-Valid-Until=false)
        ;;
    *)
        echo "rocq-root.sh: unknown suite '$SUITE' (bookworm, trixie or forky)" >&2
        exit 2
        ;;
esac

# The mirror apt itself uses on this machine (deb822 sources first, then sources.list).
mirror() {
    local uri
    uri=$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -h -m1 '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

install_tools() {
    if ! command -v debootstrap >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
}

make_root() {
    local stamp="$ROOT/.rocqcot-root"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$SUITE $PACKAGES" ]; then
        return
    fi
    install_tools
    echo "rocq-root.sh: making a $SUITE root in $DIR (a few minutes)" >&2
    mkdir -p "$ROOT"
    if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
        # shellcheck disable=SC2086
        debootstrap --variant=minbase "$SUITE" "$ROOT" "$(mirror)" $DEBOOTSTRAP_SCRIPT >&2
    fi
    mount_folders /proc /dev
    # debootstrap's --include does not resolve OCaml's virtual packages: install in a second step.
    chroot "$ROOT" apt-get "${APT_OPTIONS[@]}" update -qq >&2
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${APT_OPTIONS[@]}" install -y -qq --no-install-recommends $PACKAGES >&2
    chroot "$ROOT" apt-get clean
    echo "$SUITE $PACKAGES" >"$stamp"
}

# Bind each folder at the same absolute path inside the root (proc is mounted as proc). A folder
# already seen inside (through a bound parent such as /tmp) gets no mount of its own: nested
# mounts keep the folder busy (it can no longer be deleted). A mount left from a folder since
# deleted and made again (a new clone at the same path) shows the deleted one: it is replaced,
# else Rocq starts in a deleted folder and fails with Sys_error.
mount_folders() {
    local folder target
    for folder in "$@"; do
        [ -d "$folder" ] || mkdir -p "$folder"
        folder=$(realpath "$folder")
        target="$ROOT$folder"
        mkdir -p "$target"
        if [ "$folder" = /proc ]; then
            mountpoint -q "$target" || mount -t proc proc "$target"
            continue
        fi
        if mountpoint -q "$target" && ! same_folder "$folder" "$target"; then
            umount --lazy "$target"
        fi
        same_folder "$folder" "$target" || mount --bind "$folder" "$target"
    done
}

same_folder() {
    [ "$(stat -c %d:%i "$1")" = "$(stat -c %d:%i "$2")" ]
}

# One wrapper per Rocq executable: run it inside the root, in the caller's real folder.
# The binary is called by its absolute path: by bare name, PATH could lead back to a wrapper.
write_wrappers() {
    local bin="$DIR/bin" name
    mkdir -p "$bin"
    for name in rocq coqc coqdep coqidetop coqidetop.opt coqtop coqchk coq_makefile coqdoc make; do
        if [ -x "$ROOT/usr/bin/$name" ]; then
            cat >"$bin/$name" <<EOF
#!/bin/sh
exec /usr/sbin/chroot "$ROOT" /bin/sh -c 'cd "\$0" && exec /usr/bin/$name "\$@"' "\$(pwd -P)" "\$@"
EOF
            chmod +x "$bin/$name"
        fi
    done
    # The root through which these executables see the file system: paths Rocq prints
    # (coqc -where) are under it when read from outside.
    echo "$ROOT" >"$bin/sysroot"
}

FOLDERS=("$@")
if [ ${#FOLDERS[@]} -eq 0 ]; then
    FOLDERS=(/tmp "$PROJECT")
    if [ -n "${ROCQCOT_HOME:-}" ]; then FOLDERS+=("$ROCQCOT_HOME"); fi
fi
# One caller at a time makes or mounts a root.
mkdir -p "$(dirname "$ROOT")"
exec 9>"$DIR.lock"
flock 9
make_root
mount_folders /proc /dev "${FOLDERS[@]}"
write_wrappers
echo "$DIR/bin"
