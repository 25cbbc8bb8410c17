"""CROSSAN's pieces on synthetic states: eq. 5 mixing, eq. 6 MOMEF, INDSAN, the sequence
encoder, the ordered histories and eq. 7-8's loss."""

from __future__ import annotations

import pytest
import torch

from models.base import BipartiteGraph, TrainingBatch
from models.crossan import PAD, SequentialRecommender, ordered_histories
from models.registry import build_model
from models.sequence import SequenceEncoder
from models.side_adapters import CrossModalMixing, ExpertFusion, SideAdapterTowers

M, K, D = 3, 4, 8


def _randomised(module: torch.nn.Module) -> torch.nn.Module:
    """Every parameter random (the zero-initialised ones would hide the paths under test)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.5)
    return module


@pytest.mark.parametrize("mode", ["cross", "independent"])
def test_mixing_weights_sum_to_one(mode: str) -> None:
    mixing = _randomised(CrossModalMixing(M, K, mode))
    for layer in range(1, K):
        weights = mixing.weights(layer)
        assert weights.shape == (M, M + 1 if mode == "cross" else 2)
        assert torch.allclose(weights.sum(-1), torch.ones(M)) and (weights > 0).all()


def test_top_k_weights_are_renormalised_over_k_experts() -> None:
    fusion = _randomised(ExpertFusion(M, D, "momef", top_k=2))
    weights = fusion.weights(torch.randn(16, M, D))
    assert torch.allclose(weights.sum(-1), torch.ones(16))
    assert ((weights > 0).sum(-1) == 2).all()


def test_k_equal_to_the_number_of_experts_is_dynamic_gating() -> None:
    momef = _randomised(ExpertFusion(M, D, "momef", top_k=M))
    dynamic = ExpertFusion(M, D, "dynamic")
    dynamic.load_state_dict(momef.state_dict())
    outputs = torch.randn(16, M, D)
    expected = (torch.softmax(momef.gate(outputs.flatten(1)), -1).unsqueeze(-1) * outputs).sum(1)
    assert torch.allclose(momef(outputs), dynamic(outputs), atol=1e-6)
    assert torch.allclose(dynamic(outputs), expected, atol=1e-6)


def test_static_fusion_gives_every_item_the_same_weights() -> None:
    fusion = _randomised(ExpertFusion(M, D, "static"))
    weights = fusion.weights(torch.randn(5, M, D))
    assert torch.allclose(weights, weights[:1].expand(5, -1))


@pytest.mark.parametrize("mixing, crosses", [("cross", True), ("independent", False)])
def test_only_cross_mixing_lets_one_expert_see_another(mixing: str, crosses: bool) -> None:
    torch.manual_seed(0)
    towers = _randomised(SideAdapterTowers(M, K, D, 6, adapter_dim=4, mixing=mixing))
    states = torch.randn(4, M, K, D)
    changed = states.clone()
    changed[:, 1] += torch.randn(4, K, D)  # only expert 1's frozen states differ
    before, after = towers.expert_outputs(states), towers.expert_outputs(changed)
    assert not torch.allclose(before[:, 1], after[:, 1])
    for other in (0, 2):
        assert torch.allclose(before[:, other], after[:, other]) != crosses
    if not crosses:  # INDSAN: no cross weights exist at all
        assert towers.mixing.logits.shape[-1] == 2


def test_adapters_start_as_the_identity() -> None:
    towers = SideAdapterTowers(1, 1, D, D, adapter_dim=4)
    x = torch.randn(3, D)
    assert torch.equal(towers.adapters[0][0](x), x)


def test_the_sequence_encoder_is_causal_and_ignores_padding() -> None:
    torch.manual_seed(0)
    encoder = SequenceEncoder(dim=8, max_length=5, num_heads=2).eval()
    items, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    changed = items.clone()
    changed[:, 3:] += torch.randn(2, 2, 8)  # later items only
    out, out_changed = encoder(items, mask), encoder(changed, mask)
    assert torch.allclose(out[:, :3], out_changed[:, :3], atol=1e-6)
    assert not torch.allclose(out[:, 3:], out_changed[:, 3:])
    # left padding: what sits in a padded slot changes nothing at the newest position
    mask[:, :2] = False
    noise = items.clone()
    noise[:, :2] = torch.randn(2, 2, 8)
    assert torch.allclose(encoder.last(items, mask), encoder.last(noise, mask), atol=1e-6)
    # and a shorter input equals the same items with their padding cut away
    assert torch.allclose(encoder.last(items[:, 2:], mask[:, 2:]), encoder.last(items, mask),
                          atol=1e-5)


def test_histories_keep_the_newest_items_in_edge_order() -> None:
    edges = torch.tensor([[1, 0, 1, 1, 0, 1], [5, 2, 6, 7, 3, 8]])
    histories = ordered_histories(BipartiteGraph(3, 9, edges), 3)
    assert histories.tolist() == [[PAD, 2, 3], [6, 7, 8], [PAD, PAD, PAD]]


def test_a_target_is_ranked_against_the_batch_without_the_users_other_items() -> None:
    # user 0: 0 -> 1 -> 2; user 1: 3 -> 4. Targets: (0, 2) and (1, 4)
    edges = torch.tensor([[0, 0, 0, 1, 1], [0, 1, 2, 3, 4]])
    model = build_model("sasrec", BipartiteGraph(2, 5, edges), None, [], embed_dim=8,
                        max_length=2).eval()
    with torch.no_grad():
        model.item_embedding.normal_()
    batch = TrainingBatch(torch.tensor([0, 1, 0]), torch.tensor([2, 4, 0]), torch.zeros(3))
    loss = model.training_losses(batch)["softmax"]  # (0, 0) is a first item: no target
    vectors = model.item_embedding
    hidden = model.encoder.last(vectors[torch.tensor([[0, 1], [0, 3]])],
                                torch.tensor([[True, True], [False, True]]))
    logits = hidden @ vectors.T - model.log_popularity
    # user 0 ranks its target 2 against 3 and 4 (its own 0 and 1 excluded); user 1 its 4
    # against 0, 1, 2 (its own 3 excluded)
    expected = (torch.nn.functional.cross_entropy(logits[0, [2, 3, 4]][None], torch.tensor([0]))
                + torch.nn.functional.cross_entropy(logits[1, [0, 1, 2, 4]][None],
                                                    torch.tensor([3]))) / 2
    assert torch.allclose(loss, expected, atol=1e-5)


def _sequential_data(num_users: int = 40, num_items: int = 30):
    torch.manual_seed(0)
    # each user walks along the item ids: a pattern a sequence model can learn
    starts = torch.randint(0, num_items, (num_users,))
    steps = torch.arange(6)
    items = (starts[:, None] + steps[None]) % num_items
    users = torch.arange(num_users)[:, None].expand_as(items)
    graph = BipartiteGraph(num_users, num_items, torch.stack([users.flatten(), items.flatten()]))
    features = torch.randn(num_items, 2 * K * D)
    return graph, features


@pytest.mark.slow
@pytest.mark.parametrize("name", ["crossan", "crossan_id", "indsan", "sasrec", "sasrec_text"])
def test_every_sequential_model_learns_a_walk(name: str) -> None:
    graph, features = _sequential_data()
    hparams = {"embed_dim": 16, "max_length": 4}
    if name != "sasrec":
        hparams["state_dim"] = D
    if name in ("crossan", "crossan_id", "indsan"):
        hparams["adapter_dim"] = 8
    model = build_model(name, graph, features if name != "sasrec" else None, [K * D, K * D],
                        **hparams)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    users, positives = graph.edge_index  # every training pair a target, as in an epoch
    batch = TrainingBatch(users, positives, torch.zeros_like(users))
    losses = []
    for _ in range(60):
        loss = model.training_losses(batch)["softmax"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert torch.isfinite(torch.tensor(losses)).all() and losses[-1] < 0.5 * losses[0]
    users, items = model.eval()()
    assert users.shape == (40, 16) and items.shape == (30, 16)


def test_the_id_residual_leaves_an_untrained_item_its_content_vector() -> None:
    graph, features = _sequential_data()
    keep = graph.edge_index[1] != 7  # item 7: no training interaction
    graph = BipartiteGraph(graph.num_users, graph.num_items, graph.edge_index[:, keep])
    model = build_model("crossan_id", graph, features, [K * D, K * D], embed_dim=16,
                        max_length=4, state_dim=D, adapter_dim=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    users, positives = graph.edge_index
    for _ in range(5):
        loss = model.training_losses(TrainingBatch(users, positives, torch.zeros_like(users)))
        optimiser.zero_grad()
        loss["softmax"].backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        served = model.serving_towers().item_tower(features)[0]  # the tower a new item takes
        items = model.all_items()
    assert torch.equal(model.item_residual[7], torch.zeros(16))
    assert torch.allclose(items[7], served[7], atol=1e-6)  # the untrained item: content alone
    trained = (items - served).norm(dim=1) > 1e-4
    assert trained.sum() == graph.num_items - 1  # every trained item has moved off its content
    assert 0 < model.diagnostics()["id_residual_share"] < 1


def test_the_id_residual_needs_a_content_item_side() -> None:
    graph, features = _sequential_data()
    with pytest.raises(ValueError, match="content"):
        SequentialRecommender(graph, None, item_encoder="ids", id_residual=True)


def test_id_dropout_trains_a_share_of_items_on_their_content_alone() -> None:
    graph, features = _sequential_data()
    model = build_model("crossan_id", graph, features, [K * D, K * D], embed_dim=16,
                        max_length=4, state_dim=D, adapter_dim=8, id_dropout=0.5)
    with torch.no_grad():
        model.item_residual.normal_()
        items = torch.arange(graph.num_items)
        content = model.content_vectors(model.states)
        dropped = (model.train().embed_items(items) - content).norm(dim=1) < 1e-6
        assert 0 < dropped.sum() < graph.num_items  # about half, drawn per step
        assert torch.allclose(model.eval().embed_items(items), content + model.item_residual)
    with pytest.raises(ValueError, match="id_dropout"):
        build_model("crossan_id", graph, features, [K * D, K * D], state_dim=D, id_dropout=1.0)
