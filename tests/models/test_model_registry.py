"""Every registered model: construction, shapes, gradients, devices, and registry errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from models.base import BipartiteGraph, ModelConfig, Recommender, TrainingBatch
from models.fusion import StaticFusionConfig
from models.registry import MODEL_NAMES, build_model, default_hparams, hparams_schema

TRAINING_FREE = ("mostpop", "content_knn")
TRAINABLE = tuple(n for n in MODEL_NAMES if n not in TRAINING_FREE)

SMALL = {"embed_dim": 16}
SMALL_FUSION = {"first_hidden": 16, "fusion_layers": 2}


def _small(name: str) -> dict[str, Any]:
    hp = dict(SMALL)
    if "fusion_layers" in default_hparams(name):
        hp.update(SMALL_FUSION)
    if "state_dim" in default_hparams(name):
        hp.update(state_dim=3, max_length=4)
    return hp


def _inputs(name: str, features: torch.Tensor, dims: list[int]):
    """Per-layer-state models take experts of K * state_dim values each: two of 2 x 3."""
    if "state_dim" in default_hparams(name):
        return torch.cat([features, features[:, :2]], 1), [6, 6]
    return features, dims


def test_model_names_are_the_documented_ones() -> None:
    assert set(MODEL_NAMES) == {
        "metammf_gcn",
        "metammf_mf",
        "lightgcn",
        "vbpr",
        "bpr",
        "early_gcn",
        "late_gcn",
        "hybrid_gcn",
        "metammf_lightgcn",
        "early_lightgcn",
        "late_lightgcn",
        "hybrid_lightgcn",
        "freedom",
        "lattice",
        "mostpop",
        "content_knn",
        "crossan",
        "crossan_id",
        "indsan",
        "sasrec",
        "sasrec_text",
    }


@pytest.mark.parametrize("name", TRAINING_FREE)
def test_training_free_baselines_have_nothing_to_train(
    name: str, graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    model = build_model(name, graph, features, modality_dims)
    assert not model.trainable
    users, items = model()
    assert users.shape[0] == graph.num_users and items.shape[0] == graph.num_items
    assert users.shape[1] == items.shape[1]


@pytest.mark.parametrize("name", TRAINABLE)
def test_forward_returns_all_user_and_item_embeddings(
    name: str,
    graph: BipartiteGraph,
    features: torch.Tensor,
    modality_dims: list[int],
) -> None:
    torch.manual_seed(0)
    model = build_model(name, graph, *_inputs(name, features, modality_dims), **_small(name))
    assert isinstance(model, Recommender)
    users, items = model()
    assert users.shape == (graph.num_users, 16)
    assert items.shape == (graph.num_items, 16)
    assert torch.isfinite(users).all() and torch.isfinite(items).all()


@pytest.mark.parametrize("name", TRAINABLE)
def test_bpr_gradients_reach_every_parameter(
    name: str,
    graph: BipartiteGraph,
    features: torch.Tensor,
    modality_dims: list[int],
) -> None:
    """Through the model's own training loss (the protocol the trainer uses)."""
    torch.manual_seed(0)
    hp = _small(name)
    if "cold_items" in default_hparams(name):
        hp["cold_items"] = torch.tensor([graph.num_items - 1])  # so unknown_item is used
    if "user_dropout" in default_hparams(name):
        hp["user_dropout"] = 0.5  # so unknown_user is used
    model = build_model(name, graph, *_inputs(name, features, modality_dims), **hp)
    model.train()
    with torch.no_grad():  # zero-initialised adapter up-projections block the down ones at
        for pname, param in model.named_parameters():  # step 0 only: open them
            if pname.endswith("up.weight"):
                param.normal_(0, 0.1)
    users, positives = graph.edge_index
    batch = TrainingBatch(users, positives, (positives + 1) % graph.num_items)
    loss = torch.stack(list(model.training_losses(batch).values())).sum()
    reg = model.l2_penalty(graph.edge_index[0], graph.edge_index[1])
    (loss + reg).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {pname}"
        assert param.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"
    assert torch.isfinite(reg)


@pytest.mark.parametrize("name", ["metammf_gcn", "bpr", "vbpr", "lightgcn"])
def test_l2_penalty_touches_only_the_batch_rows_of_id_tables(
    name: str, graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    model = build_model(name, graph, features, modality_dims, **_small(name))
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(1.0)  # zero-initialised biases would hide a missing penalty
    users, items = torch.tensor([0, 0]), torch.tensor([1])
    model.l2_penalty(users, items).backward()
    tables = set(model.user_tables) | set(model.item_tables)
    assert tables, "every model has per-user/per-item tables"
    for pname, param in model.named_parameters():
        touched = param.grad is not None and bool(param.grad.abs().sum() > 0)
        if pname in model.user_tables:
            assert param.grad[1:].abs().sum() == 0 and param.grad[0].abs().sum() > 0
        elif pname in model.item_tables:
            rows = param.grad.abs().sum(dim=1)
            assert rows[1] > 0 and rows.sum() == rows[1], f"{name}: {pname}"
        else:
            assert touched, f"{name}: shared weight {pname} is not regularised"


@pytest.mark.parametrize("name", ["metammf_gcn", "lightgcn", "vbpr"])
def test_state_dict_holds_parameters_only_and_round_trips(
    name: str,
    graph: BipartiteGraph,
    features: torch.Tensor,
    modality_dims: list[int],
) -> None:
    torch.manual_seed(0)
    model = build_model(name, graph, features, modality_dims, **_small(name)).eval()
    state = model.state_dict()
    assert set(state) == {n for n, _ in model.named_parameters()}
    twin = build_model(name, graph, features, modality_dims, **_small(name)).eval()
    twin.load_state_dict(state)
    for a, b in zip(model(), twin(), strict=True):
        torch.testing.assert_close(a, b)
    clone = copy.deepcopy(model)
    torch.testing.assert_close(clone()[1], model()[1])
    assert model.to("cpu") is model  # buffers (features, graph) move with the module


def test_fusion_hyperparameters_reach_the_fusion(
    graph: BipartiteGraph,
    features: torch.Tensor,
    modality_dims: list[int],
) -> None:
    model = build_model(
        "metammf_gcn",
        graph,
        features,
        modality_dims,
        embed_dim=16,
        fusion_layers=3,
        first_hidden=32,
        meta_dim=4,
        rank=8,
        fusion_mode="full",
        static_weight=False,
        num_layers=1,
    )
    fusion = model.fusion
    assert fusion.widths == [10, 32, 16, 8]
    assert fusion.meta_dim == 4 and fusion.mode == "full" and not fusion.static_weight
    assert model.sage.num_layers == 1


def test_unknown_name_lists_valid_names(graph: BipartiteGraph) -> None:
    with pytest.raises(ValueError, match="metammf_gcn") as err:
        build_model("ngcf", graph, None, [])
    assert all(name in str(err.value) for name in MODEL_NAMES)


def test_unknown_hyperparameter_is_named(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    with pytest.raises(TypeError, match="rank"):
        build_model("early_gcn", graph, features, modality_dims, rank=4)
    with pytest.raises(TypeError, match="learning_rate"):
        build_model("bpr", graph, None, [], learning_rate=0.1)


def test_default_hparams_are_fresh_copies() -> None:
    hp = default_hparams("metammf_gcn")
    assert hp["embed_dim"] == 64 and hp["meta_dim"] == 5 and hp["rank"] == 16
    hp["rank"] = 1
    assert default_hparams("metammf_gcn")["rank"] == 16


def test_feature_models_reject_mismatched_features(graph: BipartiteGraph) -> None:
    with pytest.raises(ValueError):
        build_model("metammf_gcn", graph, None, [])
    with pytest.raises(ValueError, match="modality_dims"):
        build_model("metammf_mf", graph, torch.randn(graph.num_items, 10), [6, 5])


def test_a_mistyped_hyperparameter_is_named_with_what_it_got(graph: BipartiteGraph) -> None:
    with pytest.raises(TypeError, match=r"embed_dim: .*integer.*'wide'"):
        build_model("lightgcn", graph, None, [], embed_dim="wide")
    with pytest.raises(TypeError, match=r"num_layers: .*integer.*2\.5"):
        build_model("lightgcn", graph, None, [], num_layers=2.5)
    model = build_model("lightgcn", graph, None, [], embed_dim=8.0)  # an exact number is fine
    assert model.embed_dim == 8


def test_a_hyperparameter_out_of_its_range_or_choices_is_named(graph: BipartiteGraph) -> None:
    with pytest.raises(ValueError, match=r"edge_dropout: .*less than 1.*1\.5"):
        build_model("freedom", graph, torch.randn(graph.num_items, 6), [6], edge_dropout=1.5)
    with pytest.raises(ValueError, match=r"combine: .*'beside' or 'propagate'.*'sideways'"):
        build_model("early_lightgcn", graph, torch.randn(graph.num_items, 6), [6],
                    combine="sideways")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_has_a_config_class_beside_it(name: str) -> None:
    schema = hparams_schema(name)
    assert issubclass(schema, ModelConfig)
    assert set(schema.model_fields) == set(default_hparams(name))
    assert schema.model_validate({}).model_dump() == default_hparams(name)
    # a fused model's fusion hyperparameters are its fusion config's
    if "fusion_layers" in schema.model_fields:
        assert issubclass(schema, StaticFusionConfig)
