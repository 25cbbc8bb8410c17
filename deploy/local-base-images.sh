#!/usr/bin/env bash
# Stand-in base images for a machine that cannot pull from an image registry but reaches the
# Debian archive (the one scripts/smoke-images.sh was run on: docs/operations.md, "Images on a
# machine without a registry"). Builds, with debootstrap and podman (as root):
#   localhost/python:3.11-slim-bookworm   Debian bookworm + python3.11 + venv (the Dockerfile's
#                                         BASE_IMAGE), plus this machine's CA certificates
#   localhost/mmrec-redis:standin          redis-server from Debian (for REDIS_IMAGE)
#   localhost/mmrec-postgres:standin       PostgreSQL 15 from Debian with the official image's
#                                          POSTGRES_USER/PASSWORD/DB start-up (for POSTGRES_IMAGE)
# An image that exists already is kept (FORCE=1 rebuilds). Scratch goes to $SCRATCH
# (default /tmp/mmrec-base-images), never into the repository.
#
#   sudo deploy/local-base-images.sh
#   SCRATCH=/work/scratch-images MIRROR=http://deb.debian.org/debian deploy/local-base-images.sh
set -euo pipefail

SCRATCH=${SCRATCH:-/tmp/mmrec-base-images}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ENGINE=${ENGINE:-podman}
CA_DIR=${CA_DIR:-/usr/local/share/ca-certificates}  # *.crt added to the images' trust store
BASE=${BASE:-localhost/python:3.11-slim-bookworm}  # the tag of the Python base
mkdir -p "$SCRATCH"

exists() { [ "${FORCE:-0}" != 1 ] && "$ENGINE" image exists "$1" 2>/dev/null; }

if ! exists "$BASE"; then
    rootfs="$SCRATCH/rootfs-python"
    rm -rf "$rootfs"
    # python3.11-venv needs python3.11-distutils, which python3-distutils provides (debootstrap
    # does not resolve virtual packages: name it).
    debootstrap --variant=minbase \
        --include=python3.11,python3.11-venv,python3-distutils,python3-pip-whl,python3-setuptools-whl,ca-certificates,findutils \
        bookworm "$rootfs" "$MIRROR"
    if compgen -G "$CA_DIR/*.crt" >/dev/null; then
        cp "$CA_DIR"/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates
    fi
    ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python3"
    ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs/debootstrap"
    # Debian's venv has pip 23.0 (certifi, not the system store): PIP_CERT points it at the store.
    tar -C "$rootfs" -c . | "$ENGINE" import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' - "$BASE"
    rm -rf "$rootfs"
fi

context="$SCRATCH/standins"
mkdir -p "$context"

if ! exists localhost/mmrec-redis:standin; then
    cat > "$context/redis-entrypoint" <<'EOF'
#!/bin/sh
# as the official image: protected mode off (the container network is the boundary)
if [ "${1:-}" = redis-server ]; then shift; exec redis-server --protected-mode no "$@"; fi
exec "$@"
EOF
    cat > "$context/Containerfile.redis" <<EOF
FROM $BASE
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \\
    && rm -rf /var/lib/apt/lists/*
COPY redis-entrypoint /usr/local/bin/redis-entrypoint
RUN chmod 755 /usr/local/bin/redis-entrypoint
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]
CMD ["redis-server"]
EOF
    "$ENGINE" build --format docker -f "$context/Containerfile.redis" \
        -t localhost/mmrec-redis:standin "$context"
fi

if ! exists localhost/mmrec-postgres:standin; then
    cat > "$context/postgres-entrypoint" <<'EOF'
#!/bin/sh
# The official image's start-up, reduced: initdb on an empty PGDATA with POSTGRES_USER and
# POSTGRES_PASSWORD, create POSTGRES_DB, password logins from the network; then postgres as
# PID 1 (STOPSIGNAL SIGINT: a fast shutdown, exit 0).
set -eu
BIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
PGDATA=${PGDATA:-/var/lib/postgresql/data}
user=${POSTGRES_USER:-postgres}
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
    printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile && chown postgres /tmp/pwfile
    as_pg "$BIN/initdb" -D "$PGDATA" -U "$user" --pwfile=/tmp/pwfile \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f /tmp/pwfile
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    as_pg "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    db=${POSTGRES_DB:-$user}
    if [ "$db" != postgres ]; then
        as_pg "$BIN/psql" -v ON_ERROR_STOP=1 -U "$user" -d postgres -c "CREATE DATABASE \"$db\""
    fi
    as_pg "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$BIN/postgres" -D "$PGDATA" \
    -c listen_addresses='*' "$@"
EOF
    cat > "$context/Containerfile.postgres" <<EOF
FROM $BASE
RUN apt-get update && apt-get install -y --no-install-recommends postgresql \\
    && (pg_dropcluster --stop 15 main || true) \\
    && rm -rf /var/lib/apt/lists/*
COPY postgres-entrypoint /usr/local/bin/postgres-entrypoint
RUN chmod 755 /usr/local/bin/postgres-entrypoint
ENV PGDATA=/var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
EOF
    "$ENGINE" build --format docker -f "$context/Containerfile.postgres" \
        -t localhost/mmrec-postgres:standin "$context"
fi
"$ENGINE" images --filter reference=localhost/python --filter reference='localhost/mmrec-*:standin'
