#!/bin/sh
# The images' entrypoint, run by dumb-init (PID 1: it forwards SIGTERM to the command and reaps
# children). Before the command it checks that the folders the container reads are readable by
# the user it runs as: a bundle trained on the host keeps the host's modes (training writes its
# folders 0700) and owner, and the image runs as uid 10001, so a mounted bundle would otherwise
# fail later with a bare "Permission denied" or not at all. Then it execs the command (so
# dumb-init's child is Python itself).
#
#   RECSYS_BUNDLE    (serve) the bundle, followed through `current`; unreadable: exit 78
#   RECSYS_DATA_DIR  (train) the datasets; unreadable: exit 78
# A path that does not exist yet is fine (the api waits for the first publish).
# MMREC_SKIP_READ_CHECK=1 skips the check.
set -eu

unreadable() {  # the first entry under $1 this user cannot read (or enter, for a folder)
    find -L "$1" \( \( -type d ! \( -readable -executable \) \) -o \( ! -type d ! -readable \) \) \
        -print -quit 2>/dev/null || true
}

check() {
    name=$1 path=$2
    [ -n "$path" ] && [ -e "$path" ] || return 0
    bad=$(unreadable "$path")
    [ -z "$bad" ] && return 0
    owner=$(stat -L -c '%u:%g, mode %a' "$bad" 2>/dev/null || echo "unknown owner")
    cat >&2 <<EOF
mmrec: $name=$path is not readable by this container's user (uid $(id -u), gid $(id -g)):
mmrec:   $bad (owner $owner)
mmrec: a bundle or dataset made on the host keeps its owner and modes (training writes 0700
mmrec: folders). Make it readable on the host (chmod -R a+rX <folder>), or run the container as
mmrec: its owner (docker run --user UID:GID; compose user:; Kubernetes runAsUser/fsGroup).
EOF
    exit 78  # EX_CONFIG
}

if [ "${MMREC_SKIP_READ_CHECK:-0}" != 1 ]; then
    check RECSYS_BUNDLE "${RECSYS_BUNDLE:-}"
    check RECSYS_DATA_DIR "${RECSYS_DATA_DIR:-}"
fi
exec "$@"
