"""The CKD benchmark's variant names: the ablations and the validation-sweep settings."""

from __future__ import annotations

import pytest

from benchmarks.ckd import VARIANTS, variant_ckd
from training.config import CKDConfig


def test_named_variants_are_the_ablations() -> None:
    assert variant_ckd("base") is None
    assert variant_ckd("ckd") == {}
    assert CKDConfig(**variant_ckd("no_teachers")).teachers is False
    assert set(VARIANTS) >= {"no_specific", "no_generic", "no_reweight"}


def test_a_sweep_variant_changes_only_the_named_settings() -> None:
    config = CKDConfig(**variant_ckd("weight=0.1+temperature=1"))
    assert (config.weight, config.temperature) == (0.1, 1.0)
    assert config.beta == CKDConfig().beta and config.teachers


@pytest.mark.parametrize("bad", ["weight", "wieght=0.1", "weight=-1", "ckd2"])
def test_a_bad_variant_is_refused_with_the_choices(bad: str) -> None:
    with pytest.raises(SystemExit, match="unknown variant"):
        variant_ckd(bad)


def test_a_settings_ckd_section_is_the_base_of_every_variant(tmp_path) -> None:
    import argparse
    import json

    from benchmarks.ckd import config_for

    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"crossan": {
        "max_epochs": 3, "ckd": {"generic_triples": 256, "batch_triples": 128}}}))
    args = argparse.Namespace(settings=str(settings), patience=2)
    assert config_for("crossan", "base", 1, args).ckd is None
    full = config_for("crossan", "ckd", 1, args).ckd
    assert (full.generic_triples, full.batch_triples) == (256, 128)
    swept = config_for("crossan", "generic_triples=64", 1, args).ckd
    assert (swept.generic_triples, swept.batch_triples) == (64, 128)
    assert config_for("crossan", "no_generic", 1, args).ckd.generic is False
