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
  # configs/tiktok_serving.json is what `python -m training select --candidates
  # configs/select_tiktok.json` chose on validation (benchmarks/results/select_tiktok.md): the
  # winning setting, trained again on training + validation with the serving rules it chose
  echo "no bundle at $RECSYS_BUNDLE: training the model chosen on validation for TikTok first"
  echo "  (configs/tiktok_serving.json: $(python -c 'import json; c = json.load(open("configs/tiktok_serving.json")); print(c["model"], "refit for", c.get("refit", {}).get("epochs", "?"), "epochs")'); why: benchmarks/results/select_tiktok.md)"
  python -m training train --data tiktok --config configs/tiktok_serving.json --out "$RECSYS_BUNDLE"
fi
if [ -z "${RECSYS_API_KEY:-}" ]; then
  # mutations are never open by accident: a fresh key for this run, printed once
  RECSYS_API_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(24))')"
  export RECSYS_API_KEY
  echo "RECSYS_API_KEY was not set: POST/DELETE endpoints need the header X-API-Key: $RECSYS_API_KEY"
fi
exec python -m service
