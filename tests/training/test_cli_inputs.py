"""The command line explains itself: help and defaults, the model choice, config errors in
one line before any data loads, flag names as config keys, and --overwrite that deletes only
a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

import bundle as bf
from models.registry import MODEL_NAMES
from training.cli import app
from training.cli.train_options import MODEL_NAMES as CLI_MODEL_NAMES
from training.cli.train_options import SERVED_MODEL
from training.progress import EpochProgress, Phases

runner = CliRunner()


def _fail(tmp_path: Path, *args: str) -> str:
    """A train that must stop at once: exit 2, one error line, no traceback, nothing written;
    its --data does not exist, so an error about anything else came before any data loaded."""
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "no-data"), "--out",
                                 str(tmp_path / "out"), "--quiet", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "not found" not in result.output
    assert not (tmp_path / "out").exists()
    return result.output


def test_every_option_of_every_command_has_help_and_a_shown_default() -> None:
    group = typer.main.get_command(app)
    missing = []
    for name, command in group.commands.items():
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            shown = param.show_default if isinstance(param.show_default, str) else (
                param.default is not None and param.show_default is not False)
            if not param.help or not (shown or param.required):
                missing.append(f"{name} {param.opts[0]}")
    assert missing == []


def test_model_is_a_choice_defaulting_to_the_served_model(tmp_path: Path) -> None:
    assert CLI_MODEL_NAMES == MODEL_NAMES  # written out so --help needs no torch
    text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "early_lightgcn" in text and "metammf_gcn" in text
    assert f"else {SERVED_MODEL}, the served model" in text
    assert "did you mean early_lightgcn" in _fail(tmp_path, "--model", "early_lightgnc")
    served = json.loads(Path("configs/tiktok_serving.json").read_text())["model"]
    assert served == SERVED_MODEL


def test_config_errors_are_one_line_with_the_file_and_position(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"model": "lightgcn",\n  "lr": 0.01,,\n}')
    output = _fail(tmp_path, "--config", str(config))
    assert f"error: {config}:2:14: invalid JSON" in output
    assert len(output.strip().splitlines()) == 1
    config.write_text(json.dumps({"cold_start_fractoin": 0.1}))
    output = _fail(tmp_path, "--config", str(config))
    assert f"{config}: unknown field 'cold_start_fractoin'; did you mean " \
           "cold_start_fraction" in output
    assert len(output.strip().splitlines()) == 1
    config.write_text(json.dumps({"model": "lightgcn", "ckd": {"wieght": 1}}))
    assert "unknown field 'ckd.wieght'; did you mean weight" in _fail(
        tmp_path, "--config", str(config))
    config.write_text(json.dumps({"model": "lightgcn", "lr": -1}))
    assert f"{config}: lr: Input should be greater than 0 (got -1)" in _fail(
        tmp_path, "--config", str(config))
    assert "--lr: lr: Input should be greater than 0" in _fail(
        tmp_path, "--config", str(config), "--lr", "-2")
    config.write_text(json.dumps({"model": "lightgcn", "hparams": {"wings": 2}}))
    assert "unknown hyperparameter" in _fail(tmp_path, "--config", str(config))
    assert f"config file {tmp_path / 'nope.json'} does not exist" in _fail(
        tmp_path, "--config", str(tmp_path / "nope.json"))
    toml = tmp_path / "c.toml"
    toml.write_text("lr = \n")
    assert f"{toml}: invalid TOML" in _fail(tmp_path, "--config", str(toml))


def test_flag_names_are_config_keys(toy_dataset_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"cold_start": 0.2, "max-epochs": 1, "hparam": {
        "embed_dim": 8}}))
    result = runner.invoke(app, ["train", "--data", str(toy_dataset_dir), "--out",
                                 str(tmp_path / "b"), "--config", str(config), "--quiet",
                                 "--no-mlflow"])
    assert result.exit_code == 0, result.output
    manifest = bf.read_manifest(tmp_path / "b")
    assert manifest.model == SERVED_MODEL  # no model named anywhere: the served one
    assert manifest.config["cold_start_fraction"] == 0.2 and manifest.config["max_epochs"] == 1
    assert manifest.config["hparams"] == {"embed_dim": 8}
    config.write_text(json.dumps({"cold_start": 0.2, "cold_start_fraction": 0.1}))
    assert "cold_start_fraction is given twice" in _fail(tmp_path, "--config", str(config))


def test_overwrite_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("three years of work")
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "no-data"), "--out",
                                 str(out), "--overwrite", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "is not a bundle (no manifest.json)" in result.output
    assert (out / "thesis.tex").read_text() == "three years of work"


def test_progress_is_a_plain_line_per_epoch_outside_a_terminal(
    capsys: pytest.CaptureFixture[str]
) -> None:
    bar = EpochProgress("m", max_epochs=50, patience=5, refit=False, enabled=True)
    bar.update(1, 0.5, 1.0, valid=0.1, valid_seconds=0.2, best=0.1, best_epoch=1)
    bar.update(2, 0.4, 1.0, valid=0.09, valid_seconds=0.2, best=0.1, best_epoch=1)
    bar.close()
    phases = Phases(after=2)
    with phases.phase("final", "choosing"):
        pass
    phases.skip("exporting", "no towers")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("m epoch 1/50: loss 0.5000, valid_recall@20 0.1000 (best "
                               "0.1000 at epoch 1; early stop by epoch 6")
    assert "early stop by epoch 6" in lines[1] and "\r" not in "".join(lines)
    assert lines[2:] == ["after training [1/2] choosing ...",
                         f"after training [1/2] choosing: {phases.seconds['final']:.1f} s",
                         "after training [2/2] exporting: skipped (no towers)"]
