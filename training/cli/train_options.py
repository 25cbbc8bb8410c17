"""What ``train`` shares with the other training commands: the model choice, the defaults
shown in ``--help``, the config assembled and checked before any data loads, and the summary
printed at the end."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import typer

from models.names import MODEL_NAMES
from training.config import (
    ConfigError,
    TrainConfig,
    build_config,
    closest,
    load_config_file,
)

# what run.sh serves (configs/tiktok_serving.json, chosen by `select` on validation)
SERVED_MODEL = "early_lightgcn"


def model_option() -> Any:
    """``--model`` of the training commands: one of :data:`MODEL_NAMES` (``--help`` lists
    them; :func:`train_config` refuses another in one line, with the closest names, before
    anything loads)."""
    return typer.Option(metavar="MODEL",
                        autocompletion=lambda: list(MODEL_NAMES),
                        show_default=f"the config's, else {SERVED_MODEL}, the served model",
                        help=f"model to train, one of: {', '.join(MODEL_NAMES)}")


def default_of(field: str) -> str:
    """``--help``'s default for a flag that overrides a config field."""
    value = TrainConfig.model_fields[field].default
    return f"the config's, else {'none' if value is None else value}"


def train_config(config: Path | None, flags: dict[str, tuple[str, Any]],
                 extra: dict[str, Any] | None = None) -> TrainConfig:
    """The config file's fields with the given flags over them (``flags``: field ->
    (flag, value or None)), the served model when neither names one, checked: fields, model
    name and hyperparameters. Raises :class:`ConfigError` (one line naming the file or flag)
    or ``TypeError``; nothing has loaded yet."""
    fields = load_config_file(config) if config else {}
    sources = dict.fromkeys(fields, str(config))
    for field, (flag, value) in flags.items():
        if value is not None:
            fields[field], sources[field] = value, flag
    fields.update(extra or {})
    fields.setdefault("model", SERVED_MODEL)
    cfg = build_config(fields, sources)
    if cfg.model not in MODEL_NAMES:
        raise ConfigError(f"{sources.get('model', 'config')}: unknown model {cfg.model!r}"
                          f"{closest(cfg.model, set(MODEL_NAMES))}")
    from models.registry import checked_hparams

    checked_hparams(cfg.model, cfg.hparams)
    return cfg


def summary(result: Any, path: Path, wall: float) -> list[str]:
    """The end of ``train``'s output: version, times adding up to the wall time, how it
    stopped, how to serve it."""
    import bundle as bundle_format
    from bundle.versions import content_hash
    from training.run_record import stop_reason

    manifest = bundle_format.read_manifest(path)
    timings = dict(result.timings)
    epochs = max(result.epochs_run, 1)
    parts = [(timings.pop("load_data", 0.0), "loading data"),
             (timings.pop("build", 0.0), "building the model"),
             (timings.pop("epochs", 0.0),
              f"{result.epochs_run} epochs ({result.train_seconds / epochs:.2f} s/epoch "
              "training" + (f" + {result.validation_seconds / epochs:.2f} s/epoch validating)"
                            if result.validation_seconds else ")")),
             (timings.pop("final", 0.0), "serving rules and reports"),
             (timings.pop("write", 0.0), "writing the bundle"),
             (timings.pop("export", 0.0), "exporting towers"),
             (timings.pop("track", 0.0), "MLflow")]
    parts += [(seconds, key) for key, seconds in timings.items()]
    other = wall - sum(seconds for seconds, _ in parts)
    stopped, warning = stop_reason(result)
    lines = [
        f"best epoch {result.best_epoch} of {result.epochs_run} ({stopped.replace('_', ' ')})",
        f"{wall:.1f} s wall = " + " + ".join(f"{s:.1f} s {what}" for s, what in parts if s)
        + f" + {max(other, 0.0):.1f} s start-up (imports) and the rest",
        f"version {manifest.version} (content {content_hash(manifest.files)}: publish keeps "
        "this version as the manifest's run_id and ends the version it names with the "
        "content hash)",
    ]
    if result.tracking_run:
        lines.append(f"MLflow run {result.tracking_run}")
    lines.append(f"serve it: RECSYS_BUNDLE={shlex.quote(str(path))} python -m service")
    if warning:
        lines.append(f"warning: {warning}")
    return lines


def echo_summary(lines: list[str]) -> None:
    for line in lines:
        if line.startswith("warning: "):
            typer.secho(line, fg=typer.colors.YELLOW, err=True)
        else:
            typer.echo(line)
