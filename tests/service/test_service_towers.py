"""ONNX Runtime towers follow the contract and match their numpy twins."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import bundle as bundle_format
from bundle.testing import FactoryBundle
from service.towers import ItemTower, UserTower, providers


def test_item_tower_outputs_embedding_and_history_state(factory: FactoryBundle):
    tower = ItemTower(factory.path / bundle_format.ITEM_TOWER)
    embedding, state = tower(factory.features[:7])
    assert np.allclose(embedding, factory.item_embeddings[:7], atol=1e-5)
    assert np.allclose(state, factory.item_states[:7], atol=1e-5)
    assert tower.feature_dim == factory.feature_dim


def test_user_tower_known_unknown_and_empty_history(factory: FactoryBundle):
    tower = UserTower(factory.path / bundle_format.USER_TOWER)
    states = [factory.item_states[i] for i in (3, 9, 11)]
    u0 = factory.user_states.shape[1]
    known = tower(states, factory.user_states[2], u0)
    assert np.allclose(known, factory.user_vector(states, 2), atol=1e-5)
    unknown = tower(states, None, u0)
    assert np.allclose(unknown, factory.user_vector(states, None), atol=1e-5)
    assert np.allclose(tower([], None, u0), factory.unknown, atol=1e-6)


def test_tower_with_wrong_inputs_is_refused(tmp_path, factory: FactoryBundle):
    path = tmp_path / "wrong.onnx"
    onnx.save(onnx.load(factory.path / bundle_format.ITEM_TOWER), path)
    with pytest.raises(ValueError, match="user tower inputs"):
        UserTower(path)


def test_cpu_provider_is_always_available():
    assert "CPUExecutionProvider" in providers()
