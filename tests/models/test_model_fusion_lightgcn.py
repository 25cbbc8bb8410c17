"""MetaMMF on the LightGCN backbone: conditioning, the new-item path, towers, baselines."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.base import BipartiteGraph, TrainingBatch
from models.conditioning import FeatureConditioner
from models.registry import build_model

SMALL = {"embed_dim": 16, "first_hidden": 16}
COMBINES = ("beside", "propagate")
# every way of building the content half: learned fusion beside the IDs (with and without the
# content-kNN part) or propagated with them
VARIANTS = (
    {"combine": "beside"},
    {"combine": "beside", "knn_weight": 0.5},
    {"combine": "beside", "knn_weight": 0.5, "new_item_fused_weight": 0.0},
    {"combine": "propagate"},
)


def _model(graph, features, dims, **hp):
    torch.manual_seed(0)
    return build_model("metammf_lightgcn", graph, features, dims, **{**SMALL, **hp})


def _history(graph: BipartiteGraph, user: int) -> torch.Tensor:
    users, items = graph.edge_index
    return items[users == user]


@pytest.mark.parametrize("mode", ["center_l2", "whiten"])
def test_conditioning_gives_unit_rows_per_modality_fitted_on_training_items(
    mode: str, features: torch.Tensor, modality_dims: list[int]
) -> None:
    fit = torch.zeros(features.shape[0], dtype=torch.bool)
    fit[:6] = True
    conditioner = FeatureConditioner(features, modality_dims, mode, fit)
    out = conditioner(features)
    start = 0
    for width in conditioner.out_dims:
        norms = out[:, start : start + width].norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-4, rtol=0)
        start += width
    # statistics come from the fit rows only: changing another item changes nothing
    shifted = features.clone()
    shifted[8] += 100.0
    twin = FeatureConditioner(shifted, modality_dims, mode, fit)
    torch.testing.assert_close(twin(features[:6]), out[:6])


def test_whitening_decorrelates_the_fit_rows() -> None:
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(400, 3, generator=gen)
    mixed = base @ torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 0.1]]) + 5.0
    conditioner = FeatureConditioner(mixed, [3], "whiten")
    centred = mixed - mixed.mean(0)
    projected = centred @ conditioner.projection_0
    cov = projected.T @ projected / (len(mixed) - 1)
    torch.testing.assert_close(cov, torch.eye(cov.shape[0]), atol=1e-3, rtol=0)


def test_content_starts_at_the_norm_of_the_id_half(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    model = _model(graph, features, modality_dims)
    with torch.no_grad():
        content = model.content(model.conditioned)
    id_norm = math.sqrt(model.id_dim * 2.0 / (graph.num_items + model.id_dim))
    ratio = float(content[~model.new_mask].norm(dim=1).mean()) / id_norm
    assert 0.99 < ratio < 1.01


@pytest.mark.parametrize("variant", VARIANTS)
def test_new_items_are_scored_exactly_as_the_item_tower_embeds_them(
    variant: dict, graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    model = _model(graph, features, modality_dims, **variant).eval()
    new = model.new_mask.nonzero().squeeze(1)
    assert len(new) >= 1  # the fixture's last item has no edges
    model.cold_scale.fill_(2.5)
    with torch.no_grad():
        _, items = model()
        torch.testing.assert_close(items[new], model.embed_new_items(features[new]))
        tower, _ = model.serving_towers().item_tower(features[new])
    torch.testing.assert_close(tower, items[new])


@pytest.mark.parametrize("combine", COMBINES)
def test_cold_scale_moves_only_new_items(
    combine: str, graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    model = _model(graph, features, modality_dims, combine=combine).eval()
    with torch.no_grad():
        _, before = model()
        model.cold_scale.fill_(3.0)
        _, after = model()
    new = model.new_mask
    torch.testing.assert_close(after[~new], before[~new])
    torch.testing.assert_close(after[new], 3.0 * before[new])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("warm_content", [1.0, 0.3])
def test_user_tower_reproduces_trained_users_from_their_training_items(
    variant: dict,
    warm_content: float,
    graph: BipartiteGraph,
    features: torch.Tensor,
    modality_dims: list[int],
) -> None:
    model = _model(graph, features, modality_dims, warm_content=warm_content, **variant)
    model.eval()
    if hasattr(model, "knn_scale"):  # a calibrated factor on the kNN weight travels too
        model.knn_scale.fill_(3.0)
    towers = model.serving_towers()
    with torch.no_grad():
        users, _ = model()
        for user in range(graph.num_users):
            history = _history(graph, user)
            if not len(history):
                continue
            vector = towers.user_tower(
                towers.item_states[history].unsqueeze(0),
                torch.ones(1, len(history)),
                towers.user_states[user : user + 1],
                torch.ones(1, 1),
            )
            torch.testing.assert_close(vector[0], users[user], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("knn_weight", [0.0, 0.5])
def test_beside_content_of_a_user_leaves_the_positive_out(
    knn_weight: float, graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    model = _model(graph, features, modality_dims, knn_weight=knn_weight).eval()
    degree = torch.bincount(graph.edge_index[0], minlength=graph.num_users)
    user = int(degree.argmax())
    history = _history(graph, user)
    with torch.no_grad():
        content = model.content(model.conditioned)
        batch = TrainingBatch(
            torch.full((len(history),), user), history, torch.zeros_like(history)
        )
        loo = model._batch_vectors(batch)[0][:, : model.content_width]
    for row, positive in enumerate(history.tolist()):
        others = [i for i in history.tolist() if i != positive]
        expected = content[others].mean(0, keepdim=True)
        torch.testing.assert_close(loo[row], model.user_content(expected)[0])
        d_m = model.content_dim
        torch.testing.assert_close(
            loo[row, :d_m], content[others, :d_m].mean(0) @ model.user_content_map
        )


def test_knn_part_scores_the_cosine_to_the_history_mean(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    """With knn_weight the model holds content kNN: its extra part scores gamma * cosine."""
    model = _model(graph, features, modality_dims, knn_weight=0.7).eval()
    knn = build_model("content_knn", graph, features, modality_dims)
    with torch.no_grad():
        users, items = model()
    part = slice(model.content_dim, model.content_width)
    knn_users, knn_items = knn()
    torch.testing.assert_close(
        users[:, part] @ items[~model.new_mask][:, part].T,
        0.7 * knn_users @ knn_items[~model.new_mask].T,
        atol=1e-5,
        rtol=1e-4,
    )
    model.knn_scale.fill_(2.0)  # the calibrated factor multiplies gamma, nothing else
    with torch.no_grad():
        scaled, scaled_items = model()
    torch.testing.assert_close(scaled[:, part], 2.0 * users[:, part])
    torch.testing.assert_close(scaled[:, : model.content_dim], users[:, : model.content_dim])
    torch.testing.assert_close(scaled_items, items)


def test_without_the_fused_part_new_items_rank_among_themselves_as_content_knn(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    held_out = torch.tensor([0, 3, 5])
    model = _model(graph, features, modality_dims, knn_weight=0.7, new_item_fused_weight=0.0,
                   cold_items=held_out).eval()
    knn = build_model("content_knn", graph, features, modality_dims, cold_items=held_out)
    new = model.new_mask
    assert int(new.sum()) >= 3
    with torch.no_grad():
        users, items = model()
        knn_users, knn_items = knn()
    scores, reference = users @ items[new].T, 0.7 * knn_users @ knn_items[new].T
    # equal up to a per-user constant (the unknown ID half): the same order for every user
    torch.testing.assert_close(scores - scores[:, :1], reference - reference[:, :1],
                               atol=1e-5, rtol=1e-4)
    # in training the fused part still scores new items (its loss terms train it)
    model.train()
    content = model.content(model.conditioned[new])
    assert model.new_item_vectors(content)[:, : model.content_dim].abs().sum() > 0


def test_new_item_loss_trains_the_feature_only_path(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    model = _model(graph, features, modality_dims, new_item_weight=1.0, new_item_dropout=0.0)
    users, positives = graph.edge_index
    batch = TrainingBatch(users, positives, (positives + 3) % graph.num_items)
    losses = model.training_losses(batch)
    assert set(losses) == {"bpr", "new_item_bpr"}
    losses["new_item_bpr"].backward()
    assert model.fusion.layers[0].W.grad.abs().sum() > 0
    without = _model(graph, features, modality_dims, new_item_weight=0.0)
    assert set(without.training_losses(batch)) == {"bpr"}


def test_mostpop_scores_training_counts(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    model = build_model("mostpop", graph, features, modality_dims)
    users, items = model()
    scores = (users @ items.T)[0]
    counts = torch.bincount(graph.edge_index[1], minlength=graph.num_items).float()
    torch.testing.assert_close(scores, counts)


def test_content_knn_is_the_cosine_to_the_history_mean(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    model = build_model("content_knn", graph, features, modality_dims)
    users, items = model()
    conditioned = F.normalize(model.conditioner(features), dim=1)
    user = 0
    mean = conditioned[_history(graph, user)].mean(0)
    expected = F.cosine_similarity(mean.unsqueeze(0), conditioned)
    torch.testing.assert_close(users[user] @ items.T, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.embed_new_items(features), items)


@pytest.mark.parametrize("name", ["early_lightgcn", "metammf_lightgcn"])
@pytest.mark.parametrize("extra", [
    {}, {"knn_weight": 1.0, "warm_content": 0.5},
    {"knn_weight": 1.0, "item_graph_k": 3, "history_decay": 0.5, "user_dropout": 0.2},
    {"knn_weight": 1.0, "item_graph_k": 3, "item_graph_warm": False},
])
def test_part_by_part_scores_give_the_vector_losses_and_gradients(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int], name: str,
    extra: dict
) -> None:
    """The training step sums its scores part by part; whole vectors are the oracle."""
    model = build_model(name, graph, features, modality_dims, embed_dim=16,
                        content_dim=8, first_hidden=16, **extra).train()
    users, positives = graph.edge_index
    batch = TrainingBatch(users, positives, (positives + 3) % (graph.num_items - 1))
    results = []
    for losses in (model.training_losses, model.vector_losses):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)  # the same new-item dropout and user dropout draws
        named = losses(batch)
        torch.stack(list(named.values())).sum().backward()
        results.append(({k: v.detach() for k, v in named.items()},
                        {n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}))
    (part, part_grads), (whole, whole_grads) = results
    assert part.keys() == whole.keys()
    for name in part:
        torch.testing.assert_close(part[name], whole[name])
    assert part_grads.keys() == whole_grads.keys()
    for name in part_grads:
        torch.testing.assert_close(part_grads[name], whole_grads[name], atol=1e-6, rtol=1e-4)
