"""The LightGCN-backbone fusion models' training step reads only the rows it needs (the fusion
of the items it reads, its users' history means, the kNN scores from dot products, MetaMMF's
input weights in one product): its losses and gradients must stay those of the whole-catalogue
computation it replaced, kept here as a plain reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.base import BipartiteGraph, TrainingBatch
from models.fusion import MetaMMFFusion
from models.registry import build_model

NUM_USERS, NUM_ITEMS = 40, 30


def reference_fusion(fusion: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eqs. 7 and 10-15 written out layer by layer, each weight its own product."""
    if not isinstance(fusion, MetaMMFFusion):
        return fusion(x)
    extractor = fusion.extractor
    s = torch.relu(extractor.phi_in(x))
    s = torch.relu(extractor.phi_out(torch.relu(extractor.phi_mid(s))))
    h = x
    for n, layer in enumerate(fusion.layers):
        out = ((h @ layer.B) * (s @ layer.C)) @ layer.A.t()
        h = out if layer.W is None else out + h @ layer.W.t()
        if n < len(fusion.layers) - 1:
            h = F.leaky_relu(h, fusion.negative_slope)
    return h


def reference_losses(model, batch: TrainingBatch) -> dict[str, torch.Tensor]:
    """The ``beside`` step as it was: ``e_m`` of every item, every user's history mean, the
    kNN profile rows built and normalised."""
    fused = model.log_scale.exp() * reference_fusion(model.fusion, model.conditioned)
    id_users, id_items = model._id_propagation()
    count = model.user_degree[batch.users].unsqueeze(1)
    total = model.history_mean.totals[batch.users].unsqueeze(1)
    weight = model.history_mean.weights_of(batch.users, batch.positives).unsqueeze(1)

    def loo(means: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        others = (means * total - weight * own) / (total - weight).clamp(min=1e-12)
        return torch.where(count > 1.0, others, torch.zeros_like(others))

    user_fused = loo(model.history_mean.user_mean(fused)[batch.users],
                     fused[batch.positives]) @ model.user_content_map
    user_id = id_users[batch.users]
    if model.knn:
        knn_weight = model.knn_scale * model.log_knn_weight.exp()
        user_knn = F.normalize(loo(model.knn_history[batch.users],
                                   model.knn_items[batch.positives]), dim=1).detach()
    unknown = (model.unknown_item / (model.num_layers + 1)).expand_as(user_id)

    def scores(items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        content = (user_fused * fused[items]).sum(1)
        if model.knn:
            content = content + knn_weight * (user_knn * model.knn_items[items]).sum(1)
        new_id = unknown if model._as_new(items) is None else unknown + model._as_new(items)
        return (model.warm_content * content + (user_id * id_items[items]).sum(1),
                content + (user_id * new_id).sum(1))

    (warm_pos, new_pos), (warm_neg, new_neg) = scores(batch.positives), scores(batch.negatives)
    is_new_pos, is_new_neg = model.new_mask[batch.positives], model.new_mask[batch.negatives]
    if model.new_item_dropout > 0.0:
        is_new_pos = is_new_pos | (torch.rand_like(warm_pos) < model.new_item_dropout)
        is_new_neg = is_new_neg | (torch.rand_like(warm_neg) < model.new_item_dropout)
    margin = (torch.where(is_new_pos, new_pos, warm_pos)
              - torch.where(is_new_neg, new_neg, warm_neg))
    losses = {"bpr": F.softplus(-margin).mean()}
    if model.new_item_weight > 0.0:
        losses["new_item_bpr"] = model.new_item_weight * F.softplus(-(new_pos - new_neg)).mean()
    return losses


@pytest.fixture
def wide_graph() -> BipartiteGraph:
    """Users with one item and with many, items without edges (the last three)."""
    gen = torch.Generator().manual_seed(3)
    users = torch.randint(0, NUM_USERS, (260,), generator=gen)
    items = torch.randint(0, NUM_ITEMS - 3, (260,), generator=gen)
    edges = torch.unique(torch.stack([users, items]), dim=1)
    return BipartiteGraph(NUM_USERS, NUM_ITEMS, edges[:, torch.randperm(edges.shape[1],
                                                                           generator=gen)])


@pytest.fixture
def wide_features() -> torch.Tensor:
    return torch.randn(NUM_ITEMS, 10, generator=torch.Generator().manual_seed(4))


def _batches(graph: BipartiteGraph) -> dict[str, TrainingBatch]:
    users, items = graph.edge_index
    negatives = (items * 7 + 5) % NUM_ITEMS  # new items among them too
    # four users with more items than the batch holds of theirs: their means read others
    busy = torch.nonzero(torch.bincount(users, minlength=NUM_USERS) >= 5)[:4, 0]
    few = torch.cat([torch.nonzero(users == user)[:2, 0] for user in busy])
    return {"few users": TrainingBatch(users[few], items[few], negatives[few]),
            "every edge": TrainingBatch(users, items, negatives)}


def _step(model, losses, batch: TrainingBatch):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)  # the same dropout draws
    named = losses(batch)
    torch.stack(list(named.values())).sum().backward()
    return ({k: v.detach() for k, v in named.items()},
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("name", ["early_lightgcn", "metammf_lightgcn"])
@pytest.mark.parametrize("extra", [
    {},
    {"knn_weight": 1.0, "warm_content": 0.5, "new_item_fused_weight": 0.0},
    {"knn_weight": 0.5, "history_decay": 0.6, "user_dropout": 0.2, "item_graph_k": 3},
    {"knn_weight": 0.5, "fusion_layers": 2, "static_weight": False},
])
def test_the_step_reading_its_rows_gives_the_whole_catalogue_losses_and_gradients(
    wide_graph: BipartiteGraph, wide_features: torch.Tensor, name: str, extra: dict,
) -> None:
    if name == "early_lightgcn":
        extra = {k: v for k, v in extra.items() if k != "static_weight"}
    torch.manual_seed(0)
    model = build_model(name, wide_graph, wide_features, [6, 4], embed_dim=16,
                        content_dim=8, first_hidden=16, new_item_dropout=0.3,
                        cold_items=torch.tensor([1]), **extra).train()
    with torch.no_grad():  # away from the start, where ReLUs and scales are symmetric
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    seen = []
    user_mean = model.history_mean.user_mean
    model.history_mean.user_mean = lambda x: seen.append(len(x)) or user_mean(x)
    for label, batch in _batches(wide_graph).items():
        seen.clear()
        new, new_grads = _step(model, model.training_losses, batch)
        # the batch of four users sums their own entries; every edge, the CSR product
        assert bool(seen) == (label == "every edge")
        old, old_grads = _step(model, lambda b: reference_losses(model, b), batch)
        assert new.keys() == old.keys()
        for term in new:
            torch.testing.assert_close(new[term], old[term], msg=f"{label}: {term}")
        assert new_grads.keys() == old_grads.keys()
        for parameter in new_grads:
            torch.testing.assert_close(new_grads[parameter], old_grads[parameter], atol=1e-6,
                                       rtol=1e-4, msg=f"{label}: {parameter}")


@pytest.mark.parametrize("layers, static", [(1, True), (3, True), (2, False)])
def test_metammf_fusion_in_one_input_product_equals_the_layer_by_layer_form(
    layers: int, static: bool
) -> None:
    torch.manual_seed(0)
    fusion = MetaMMFFusion(12, out_dim=4, num_layers=layers, first_hidden=16,
                           static_weight=static)
    x = torch.randn(25, 12)
    grads = []
    for forward in (fusion, lambda v: reference_fusion(fusion, v)):
        fusion.zero_grad(set_to_none=True)
        out = forward(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in fusion.named_parameters()}))
    (fast, fast_grads), (plain, plain_grads) = grads
    torch.testing.assert_close(fast, plain)
    assert fast_grads.keys() == plain_grads.keys()
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name])


def test_knn_scores_from_dot_products_equal_the_normalised_profile(
    wide_graph: BipartiteGraph, wide_features: torch.Tensor,
) -> None:
    model = build_model("metammf_lightgcn", wide_graph, wide_features, [6, 4], embed_dim=16,
                        knn_weight=1.0, history_decay=0.7)
    batch = _batches(wide_graph)["every edge"]
    positive, negative = model._knn_loo_scores(batch, model._loo_parts(batch))
    profile = F.normalize(model._loo(batch, model.knn_history[batch.users],
                                     model.knn_items[batch.positives]), dim=1)
    torch.testing.assert_close(positive, (profile * model.knn_items[batch.positives]).sum(1))
    torch.testing.assert_close(negative, (profile * model.knn_items[batch.negatives]).sum(1))
    # a user with one training item has no profile without it: zero scores
    alone = model.user_degree[batch.users] == 1
    assert bool(alone.any()) and bool((positive[alone] == 0).all())
