"""A run's own record, kept in its bundle: the per-epoch history with its times, how the run
stopped, the phases' wall times and the final warm/cold report (``training_history.json``),
and the training curve drawn from it (``training_curve.png``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from training.trainer import EARLY_STOP_METRIC, TrainResult

log = logging.getLogger(__name__)


def stop_reason(result: TrainResult) -> tuple[str, str | None]:
    """How the epochs ended (``refit``, ``untrained``, ``early_stopping`` or ``max_epochs``)
    and, when max_epochs cut a run before early stopping could, a warning saying so."""
    config = result.config
    if config.refit is not None:
        return "refit", None
    if result.epochs_run == 0:
        return "untrained", None
    if result.epochs_run - result.best_epoch >= config.patience:
        return "early_stopping", None
    state = ("still improving" if result.best_epoch == result.epochs_run else
             f"within patience ({result.epochs_run - result.best_epoch} of {config.patience} "
             "epochs without a better one)")
    return "max_epochs", (
        f"max_epochs {config.max_epochs} stopped the run while valid {EARLY_STOP_METRIC} was "
        f"{state}: best at epoch {result.best_epoch} of {result.epochs_run}; a larger "
        "--max-epochs may find a better model")


def history_document(result: TrainResult) -> dict[str, Any]:
    """What ``training_history.json`` holds."""
    stopped, warning = stop_reason(result)
    return {
        "model": result.config.model,
        "selection_metric": f"valid {EARLY_STOP_METRIC}",
        "max_epochs": result.config.max_epochs,
        "patience": result.config.patience,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_by": stopped,
        "warning": warning,
        # per epoch: mean loss (and each named term), training and validation seconds, the
        # validation metrics (early-stopped runs; a refit has no validation)
        "epochs": result.history,
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
        "report": {"valid": result.valid_report, "test": result.test_report,
                   "test_served": result.served_test_report,
                   "slot_share": result.slot_share},
    }


def write_history(result: TrainResult, path: Path) -> None:
    path.write_text(json.dumps(history_document(result), indent=1, default=float))


def write_curve(result: TrainResult, path: Path) -> bool:
    """Draw the loss and (early-stopped runs) the validation Recall/NDCG@20 per epoch, the
    kept epoch marked; False (nothing written) without matplotlib or without epochs."""
    history = result.history
    if not history:
        return False
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # no display, no pyplot
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        log.warning("matplotlib is not installed: the bundle has no training curve")
        return False
    epochs = [h["epoch"] for h in history]
    validated = "recall@20" in history[0]
    figure = Figure(figsize=(9 if validated else 5, 3.4), dpi=100, layout="constrained")
    axes = figure.subplots(1, 2 if validated else 1, squeeze=False)[0]
    axes[0].plot(epochs, [h["loss"] for h in history], marker=".", label="loss (training)")
    axes[0].set(xlabel="epoch", ylabel="mean loss per batch", title="training loss")
    if validated:
        for key in ("recall@20", "ndcg@20"):
            axes[1].plot(epochs, [h.get(key, float("nan")) for h in history], marker=".",
                         label=f"valid {key}")
        axes[1].set(xlabel="epoch", title="validation (the early-stopping split)")
        axes[1].legend(loc="lower right", fontsize=8)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.axvline(result.best_epoch, color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    stopped, _ = stop_reason(result)
    figure.suptitle(f"{result.config.model}: best epoch {result.best_epoch} of "
                    f"{result.epochs_run} ({stopped.replace('_', ' ')})", fontsize=10)
    FigureCanvasAgg(figure).print_png(path)
    return True
