"""Recency-weighted histories: newer items weigh more, in training, fold-in and the tower."""

from __future__ import annotations

import torch

from models.base import BipartiteGraph, TrainingBatch
from models.history import HistoryMean, newer_in_history, recency_weights
from models.registry import build_model

# user 0: items 3, 1, 4 (oldest first); user 1: items 2, 0; user 2: nothing
EDGES = torch.tensor([[0, 1, 0, 1, 0], [3, 2, 1, 0, 4]])


def test_each_item_counts_the_newer_items_of_its_user() -> None:
    assert newer_in_history(EDGES[0]).tolist() == [2, 1, 1, 0, 0]


def test_the_mean_weighs_an_item_by_decay_to_the_number_of_newer_items() -> None:
    mean = HistoryMean(BipartiteGraph(3, 5, EDGES), decay=0.5)
    x = torch.randn(5, 3)
    expected0 = (0.25 * x[3] + 0.5 * x[1] + 1.0 * x[4]) / 1.75
    expected1 = (0.5 * x[2] + 1.0 * x[0]) / 1.5
    out = mean.user_mean(x)
    assert torch.allclose(out[0], expected0) and torch.allclose(out[1], expected1)
    assert torch.equal(out[2], torch.zeros(3))
    assert mean.weights_of(torch.tensor([0, 0, 1, 2]), torch.tensor([3, 2, 0, 0])).tolist() == [
        0.25, 0.0, 1.0, 0.0]


def test_the_history_rows_of_some_users_rebuild_their_means() -> None:
    mean = HistoryMean(BipartiteGraph(3, 5, EDGES), decay=0.5)
    x = torch.randn(5, 3)
    users = torch.tensor([2, 0, 0, 1])  # no history, repeated, any order
    row, item, share = mean.history_rows(users)
    out = torch.zeros(len(users), 3).index_add(0, row, share.unsqueeze(1) * x[item])
    torch.testing.assert_close(out, mean.user_mean(x)[users])
    assert sorted(item[row == 1].tolist()) == [1, 3, 4]


def test_served_history_weights_match_the_training_mean_whatever_the_padding() -> None:
    mask_right = torch.tensor([[0.0, 1.0, 1.0, 1.0]])  # the service right-aligns
    mask_left = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert torch.allclose(recency_weights(mask_right, 0.5), torch.tensor([[0, 0.25, 0.5, 1]]))
    assert torch.allclose(recency_weights(mask_left, 0.5), torch.tensor([[0.25, 0.5, 1, 0]]))
    assert torch.equal(recency_weights(mask_right, 1.0), mask_right)


def _model(graph, features, dims, decay):
    torch.manual_seed(0)
    return build_model("early_lightgcn", graph, features, dims, embed_dim=16, content_dim=8,
                       knn_weight=1.0, first_hidden=16, history_decay=decay)


def test_leaving_the_positive_out_removes_its_own_weight(graph, features, modality_dims):
    model = _model(graph, features, modality_dims, 0.5).eval()
    fused = model.fused(model.conditioned)
    users, positives = graph.edge_index[:, :6]
    out = model._leave_one_out(fused, TrainingBatch(users, positives, positives))
    newer = newer_in_history(graph.edge_index[0])
    for row, (user, item) in enumerate(zip(users.tolist(), positives.tolist(), strict=True)):
        own = graph.edge_index[0] == user
        others = own & (graph.edge_index[1] != item)
        if own.sum() < 2:
            assert torch.equal(out[row], torch.zeros_like(out[row]))
            continue
        weights = 0.5 ** newer[others].float()
        content = model._content_rows(fused, graph.edge_index[1][others])
        expected = (weights.unsqueeze(1) * content).sum(0) / weights.sum()
        assert torch.allclose(out[row], expected, atol=1e-5)


def test_the_user_tower_weighs_a_served_history_as_training_did(graph, features,
                                                                modality_dims):
    model = _model(graph, features, modality_dims, 0.7).eval()
    users, _ = model()
    towers = model.serving_towers()
    for user in range(graph.num_users):
        history = graph.edge_index[1][graph.edge_index[0] == user]  # oldest first
        if not len(history):
            continue
        state = towers.item_states[history].unsqueeze(0)
        padded = torch.cat([torch.zeros(1, 2, state.shape[2]), state], 1)  # right-aligned
        mask = torch.cat([torch.zeros(1, 2), torch.ones(1, len(history))], 1)
        out = towers.user_tower(padded, mask, towers.user_states[user : user + 1],
                                torch.ones(1, 1))
        assert torch.allclose(out[0], users[user], atol=1e-5), user


def test_content_knn_weighs_recent_items_more(graph, features, modality_dims):
    plain = build_model("content_knn", graph, features, modality_dims)
    recent = build_model("content_knn", graph, features, modality_dims, history_decay=0.3)
    user = int(graph.edge_index[0][-1])
    newest = int(graph.edge_index[1][graph.edge_index[0] == user][-1])
    if (graph.edge_index[0] == user).sum() > 1:
        assert recent.users[user] @ plain.items[newest] > plain.users[user] @ plain.items[newest]
