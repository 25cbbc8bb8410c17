"""CKD through the unchanged trainer: teachers trained once per setting and reused, the
plug-in attached by the pipeline's init hook, the bundle free of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.ckd import load_teacher, teacher_paths, train_teachers, with_ckd
from training.config import CKDConfig, TrainConfig
from training.pipeline import prepare_dataset, train_to_bundle
from training.trainer import train


def _config(**ckd) -> TrainConfig:
    return TrainConfig(model="metammf_lightgcn", max_epochs=2, patience=2, batch_size=64,
                       lr=0.01, report_curves=False, hparams={"embed_dim": 16},
                       ckd=CKDConfig(generic_triples=32, **ckd))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "cache"))


def test_teachers_are_trained_once_per_setting_and_see_one_modality(
    toy_dataset_dir: Path,
) -> None:
    config = _config()
    dataset = prepare_dataset(toy_dataset_dir, config)
    paths = train_teachers(dataset, config, progress=False)
    assert [load_teacher(p)[1]["modality"] for p in paths] == dataset.modality_names
    stamps = [p.stat().st_mtime_ns for p in paths]
    # another seed and another CKD weight of the same setting reuse them
    again = config.model_copy(update={"seed": 7, "ckd": CKDConfig(weight=0.5)})
    assert train_teachers(dataset, again, progress=False) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    # a different setting trains its own
    other = config.model_copy(update={"lr": 0.02})
    assert teacher_paths(dataset, other)["image"] != paths[0]
    scores, info = load_teacher(paths[0])
    assert scores.users.shape[0] == dataset.num_users and info["best_epoch"] >= 1


def test_a_ckd_run_trains_through_the_trainer_and_writes_a_plain_bundle(
    toy_dataset_dir: Path, tmp_path: Path,
) -> None:
    import bundle as bundle_format
    from training.checkpoint import load_checkpoint

    config = _config()
    dataset = prepare_dataset(toy_dataset_dir, config)
    result = train(dataset, config, progress=False,
                   init_model=with_ckd(dataset, config, progress=False))
    terms = result.history[-1]
    assert terms["loss_ckd_specific"] > 0 and terms["loss_ckd_generic"] > 0, terms
    plugin = result.model.loss_plugins[0]
    assert abs(sum(plugin.mean_weights()) - 2.0) < 1e-5
    # the pipeline attaches it by itself; the bundle's model reloads without it
    _, path = train_to_bundle(toy_dataset_dir, tmp_path / "b", config, progress=False)
    model, _ = load_checkpoint(path / bundle_format.WEIGHTS)
    assert model.loss_plugins == ()
    with torch.no_grad():
        model()


def test_without_teachers_no_teacher_is_trained(toy_dataset_dir: Path) -> None:
    config = _config(teachers=False)
    dataset = prepare_dataset(toy_dataset_dir, config)
    init = with_ckd(dataset, config, progress=False)
    result = train(dataset, config, progress=False, init_model=init)
    assert not (Path(teacher_paths(dataset, config)["image"]).exists())
    last = result.history[-1]
    assert "loss_ckd_generic" not in last and "loss_ckd_specific" in last


def test_ckd_on_an_id_only_model_is_refused(toy_dataset_dir: Path) -> None:
    config = _config(teachers=False).model_copy(update={"model": "lightgcn", "hparams": {}})
    dataset = prepare_dataset(toy_dataset_dir, config)
    with pytest.raises(ValueError, match="multimodal model"):
        train(dataset, config, progress=False, init_model=with_ckd(dataset, config))


def test_the_cli_flags_build_the_ckd_section() -> None:
    from training.cli.models import _ckd_fields

    assert _ckd_fields(None, False, None, None, None, []) is None
    assert _ckd_fields(None, True, 0.1, None, 0.5, ["generic", "reweight"]) == {
        "weight": 0.1, "temperature": 0.5, "generic": False, "reweight": False}
    assert _ckd_fields({"beta": 2.0}, False, None, None, None, []) == {"beta": 2.0}
    with pytest.raises(ValueError, match="need --ckd"):
        _ckd_fields(None, False, 0.1, None, None, [])
    with pytest.raises(ValueError, match="--ckd-without takes"):
        _ckd_fields(None, True, None, None, None, ["everything"])
