"""``/ui``: a page to look at what the model recommends, served from the package's static files
(``service/ui/``: plain HTML, JS and CSS, no build step, no CDN), and ``GET /ui/model``, the one
thing the page needs that the API does not already say: whether new items are added as text, a
few user ids to pick from, and the last retrain decision (read-only, from the bundles root's
``gate/gate.json``, the file ``python -m training retrain`` writes). Everything else the page
shows comes from the public API (``/readyz``, ``/recommend``, ``/items``, ``/users``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from bundle.versions import VERSIONS
from service.settings import Settings

STATIC = Path(__file__).resolve().parents[1] / "ui"
SAMPLE_USERS = 20
# what the page shows of gate.json: the decision and its numbers, never a server path
GATE_FIELDS = ("accepted", "reasons", "metric", "tolerance", "valid", "holdout", "live_version",
               "published", "run", "epochs", "train_seconds", "warm_start")

router = APIRouter(tags=["ui"])


class LastRetrain(BaseModel):
    accepted: bool = Field(description="Whether the candidate passed the quality gate.")
    reasons: list[str] = Field([], description="Why it was rejected (empty when accepted).")
    metric: str | None = Field(None, description="The gate's metric, e.g. recall@20.")
    tolerance: float | None = Field(None, description="How much worse than live it may be.")
    valid: dict[str, Any] = Field({}, description="The metric on the validation split: "
                                  "candidate, live, popularity.")
    holdout: dict[str, Any] = Field({}, description="The metric on the newest logged events.")
    live_version: str | None = Field(None, description="The version served during the run.")
    published: str | None = Field(None, description="The version published (null: rejected).")
    run: str | None = Field(None, description="The retrain run's name.")
    epochs: dict[str, Any] | None = Field(None, description="Epochs run and the best one.")
    train_seconds: float | None = Field(None, description="Wall time of the run.")
    warm_start: bool | None = Field(None, description="Started from the live model's weights.")
    finished_at: float = Field(description="Unix time the decision was written.")


class UiModel(BaseModel):
    model_version: str | None = Field(description="Bundle being served (null: none yet).")
    text_items: bool = Field(description="New items are added as text (a text bundle); "
                             "otherwise as feature vectors.")
    sample_users: list[str] = Field(description="A few of the bundle's user ids, to pick from.")
    last_retrain: LastRetrain | None = Field(
        description="The last retrain's gate decision (`<bundles root>/gate/gate.json`); null "
        "when the served bundle is not in a bundles root or no retrain has run.")
    online: list[dict[str, Any]] = Field(
        [], description="Online evaluation over the last window, per model version: lists "
        "served, interactions after them, the share that hit a list (all, warm, new items); "
        "recomputed every RECSYS_ONLINE_EVAL_S.")


@router.get("/ui/model", response_model=UiModel, summary="Served model and last retrain")
def ui_model(request: Request) -> UiModel:
    """What the page at `/ui` shows about the served model. Read-only."""
    service = getattr(request.app.state, "service", None)
    model = service.model if service is not None else None
    return UiModel(
        model_version=model.version if model is not None else None,
        text_items=model is not None and model.text_tower is not None,
        sample_users=list(model.bundle.user_ids[:SAMPLE_USERS]) if model is not None else [],
        last_retrain=last_retrain(request.app.state.settings),
        online=service.served.latest if service is not None else [],
    )


def gate_file(settings: Settings) -> Path | None:
    """``<root>/gate/gate.json`` for a served ``<root>/current`` (or ``<root>/versions/<v>``)."""
    bundle = settings.bundle.absolute()
    roots = [bundle.parent]
    if bundle.resolve().parent.name == VERSIONS:
        roots.append(bundle.resolve().parent.parent)
    return next((p for r in roots if (p := r / "gate" / "gate.json").is_file()), None)


def last_retrain(settings: Settings) -> LastRetrain | None:
    path = gate_file(settings)
    if path is None:
        return None
    try:
        decision = json.loads(path.read_text())
        return LastRetrain(**{k: decision[k] for k in GATE_FIELDS if k in decision},
                           finished_at=path.stat().st_mtime)
    except (OSError, ValueError):  # being replaced, or not a decision: the page shows none
        return None


def install(app: FastAPI) -> None:
    """The page, its static files, and ``GET /ui/model``."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")

    @app.get("/ui", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:"})
