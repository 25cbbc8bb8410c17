"""The command line end to end on a small real dataset."""

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import bundle as bf
from training.cli import app
from training.data import FOLD_SEED

runner = CliRunner()


def _train(data: Path, out: Path, *extra: str):
    return runner.invoke(
        app,
        ["train", "--data", str(data), "--out", str(out), "--max-epochs", "2", "--quiet", *extra],
    )


def test_train_writes_a_verified_bundle_with_metrics(toy_dataset_dir: Path, tmp_path: Path) -> None:
    result = _train(
        toy_dataset_dir,
        tmp_path / "b",
        "--model",
        "metammf_gcn",
        "--hparam",
        "fusion_layers=2",
        "--lr",
        "0.005",
    )
    assert result.exit_code == 0, result.output
    manifest = bf.load_bundle(tmp_path / "b").manifest
    assert manifest.model == "metammf_gcn"
    assert manifest.config["lr"] == 0.005
    assert manifest.config["hparams"] == {"fusion_layers": 2}
    assert [(m.name, m.dim) for m in manifest.modalities] == [("audio", 4), ("image", 8)]
    assert 0.0 <= manifest.metrics["test"]["recall@20"] <= 1.0
    assert {bf.ITEM_TOWER, bf.USER_TOWER, bf.WEIGHTS} <= set(manifest.files)
    assert "recall@20" in result.output


def test_evaluate_reproduces_the_recorded_test_metrics(
    toy_dataset_dir: Path, tmp_path: Path
) -> None:
    assert _train(toy_dataset_dir, tmp_path / "b", "--model", "bpr").exit_code == 0
    recorded = bf.load_bundle(tmp_path / "b").manifest.metrics["test"]
    result = runner.invoke(app, ["evaluate", "--bundle", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    test_line = next(line for line in result.output.splitlines() if line.startswith("test"))
    assert f"{recorded['recall@20']:.4f}" in test_line


def test_evaluate_prints_what_train_printed_with_the_reserved_share(
    tiktok_sample: Path, tmp_path: Path
) -> None:
    """Same lists as the service builds (10% reserved for new items), same rows, same numbers."""
    trained = _train(tiktok_sample, tmp_path / "b", "--model", "early_lightgcn", "--max-epochs",
                     "2", "--new-item-slots", "0.1", "--cold-start", "0.1")
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(app, ["evaluate", "--bundle", str(tmp_path / "b")])
    assert evaluated.exit_code == 0, evaluated.output
    assert "10% of each list reserved" in evaluated.output

    def rows(output: str) -> dict[str, str]:
        names = ("valid", "test", "test, warm rows", "test, cold rows", "cold among cold")
        found = {}
        for line in output.splitlines():
            for name in names:
                if line.startswith(name) and line[len(name):len(name) + 2].strip() == "":
                    found[name] = line[len(name):].split()
        return found

    printed = rows(trained.output)
    assert set(printed) == {"valid", "test", "test, warm rows", "test, cold rows",
                            "cold among cold"}
    assert rows(evaluated.output) == printed


def test_config_file_is_read_and_flags_override_it(toy_dataset_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": "lightgcn", "lr": 0.01, "hparams": {"num_layers": 1}}))
    result = _train(toy_dataset_dir, tmp_path / "b", "--config", str(config), "--lr", "0.02")
    assert result.exit_code == 0, result.output
    manifest = bf.load_bundle(tmp_path / "b").manifest
    assert manifest.model == "lightgcn" and manifest.config["lr"] == 0.02
    assert manifest.config["hparams"] == {"num_layers": 1}


def test_bad_inputs_give_one_clear_line_not_a_traceback(
    tmp_path: Path, toy_dataset_dir: Path
) -> None:
    cases = [
        (["--data", str(tmp_path / "missing")], "not found"),
        (["--data", str(toy_dataset_dir), "--model", "nope"], "unknown model 'nope'"),
        (["--data", str(toy_dataset_dir), "--hparam", "wings=2"], "unknown hyperparameter"),
        (["--data", str(toy_dataset_dir), "--lr", "-1"], "lr"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["train", "--out", str(tmp_path / "x"), "--quiet", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_existing_bundle_needs_overwrite(toy_dataset_dir: Path, tmp_path: Path) -> None:
    assert _train(toy_dataset_dir, tmp_path / "b", "--model", "bpr").exit_code == 0
    again = _train(toy_dataset_dir, tmp_path / "b", "--model", "bpr")
    assert again.exit_code == 2 and "already exists" in again.output
    assert _train(toy_dataset_dir, tmp_path / "b", "--model", "bpr", "--overwrite").exit_code == 0


def test_cold_start_training_reports_cold_metrics(toy_dataset_dir: Path, tmp_path: Path) -> None:
    result = _train(  # id_dropout is metammf_gcn's (the default model is the served one)
        toy_dataset_dir, tmp_path / "b", "--model", "metammf_gcn", "--cold-start", "0.2",
        "--hparam", "id_dropout=0.2"
    )
    assert result.exit_code == 0, result.output
    manifest = bf.load_bundle(tmp_path / "b").manifest
    assert manifest.dataset["cold_items"] == 8
    report = manifest.metrics["test_report"]
    assert report["cold"]["users"] > 0 and report["rows"]["cold"] > 0
    assert 0.0 <= report["cold_share@20"] <= 1.0


def test_new_item_slots_reach_the_bundle_with_its_new_items(
    toy_dataset_dir: Path, tmp_path: Path
) -> None:
    result = _train(
        toy_dataset_dir, tmp_path / "b", "--model", "early_lightgcn", "--cold-start", "0.2",
        "--cold-start-fold", "1", "--new-item-slots", "0.1", "--epoch-valid-users", "10",
        "--hparam", "embed_dim=16", "--hparam", "new_item_fused_weight=0",
    )
    assert result.exit_code == 0, result.output
    bundle = bf.load_bundle(tmp_path / "b")
    assert bundle.new_item_slots == 0.1
    assert bundle.manifest.config["cold_start_fold"] == 1
    held_out = {str(i) for i in np.array_split(
        np.random.default_rng(FOLD_SEED).permutation(40), 5)[1]}
    assert held_out <= set(bundle.new_items)
    assert bundle.manifest.metrics["test_report"]["cold_share@20"] >= 0.1


def test_publish_versions_and_rollback_commands(toy_dataset_dir: Path, tmp_path: Path) -> None:
    assert _train(toy_dataset_dir, tmp_path / "b", "--model", "lightgcn").exit_code == 0
    root = ["--root", str(tmp_path / "bundles")]
    published = []
    for _ in range(2):
        result = runner.invoke(app, ["publish", "--bundle", str(tmp_path / "b"), *root])
        assert result.exit_code == 0, result.output
        published.append(result.output.split()[1].rstrip(";"))
    listing = runner.invoke(app, ["versions", *root]).output.splitlines()
    assert listing[:3] == [f"< {published[0]}", f"* {published[1]}", "history (newest last):"]
    assert listing[3].endswith(f"publish  - -> {published[0]}  (by hand)")
    assert listing[4].endswith(f"publish  {published[0]} -> {published[1]}  (by hand)")
    result = runner.invoke(app, ["rollback", *root, "--reason", "bad recommendations"])
    assert result.exit_code == 0 and result.output.strip().endswith(published[0])
    listing = runner.invoke(app, ["versions", *root]).output.splitlines()
    assert listing[-1].endswith(f"rollback {published[1]} -> {published[0]}  "
                                "(bad recommendations)")
    assert bf.load_bundle(tmp_path / "bundles" / "current").version == published[0]
    result = runner.invoke(app, ["rollback", *root, "--to", "no-such-version"])
    assert result.exit_code == 2 and "no version" in result.output
    (tmp_path / "b" / bf.USER_IDS).write_text("[]")  # a damaged candidate is refused
    result = runner.invoke(app, ["publish", "--bundle", str(tmp_path / "b"), *root])
    assert result.exit_code == 2 and "sha256" in result.output


def test_set_reaches_any_training_field_and_names_the_closest_for_a_typo(
    toy_dataset_dir: Path, tmp_path: Path
) -> None:
    result = _train(toy_dataset_dir, tmp_path / "b", "--model", "bpr", "--set", "patience=2",
                    "--set", "epoch_valid_users=50")
    assert result.exit_code == 0, result.output
    config = bf.load_bundle(tmp_path / "b").manifest.config
    assert config["patience"] == 2 and config["epoch_valid_users"] == 50
    result = runner.invoke(app, ["train", "--data", str(toy_dataset_dir), "--out",
                                 str(tmp_path / "x"), "--set", "patiense=3", "--quiet"])
    assert result.exit_code == 2 and "did you mean patience" in result.output
