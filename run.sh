#!/usr/bin/env bash
# One command, fresh machine to running service: install, train on TikTok if no bundle exists, serve.
#   RECSYS_BUNDLE   bundle folder (default bundles/tiktok)
#   RECSYS_DATA_DIR dataset folder holding tiktok/ (default ../shared/datasets)
#   RECSYS_HOST / RECSYS_PORT  where to listen (default 127.0.0.1:8000); service/README.md lists the rest
#   RECSYS_API_KEY  key of the mutating endpoints (default: a random one, printed at start)
set -euo pipefail
cd "$(dirname "$0")"
. scripts/bootstrap.sh

export RECSYS_BUNDLE="${RECSYS_BUNDLE:-bundles/tiktok}"
if [ ! -f "$RECSYS_BUNDLE/manifest.json" ]; then
  echo "no bundle at $RECSYS_BUNDLE: training the validation-chosen model on TikTok first (a few minutes)"
  python -m training train --data tiktok --config configs/tiktok_serving.json --out "$RECSYS_BUNDLE"
fi
if [ -z "${RECSYS_API_KEY:-}" ]; then
  # mutations are never open by accident: a fresh key for this run, printed once
  RECSYS_API_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(24))')"
  export RECSYS_API_KEY
  echo "RECSYS_API_KEY was not set: POST/DELETE endpoints need the header X-API-Key: $RECSYS_API_KEY"
fi
exec python -m service
