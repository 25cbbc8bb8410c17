"""Users as served: a user's vector after interactions it had after training, without training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.base import BipartiteGraph
from models.registry import build_model

NEW_PAIRS = torch.tensor([[0, 8], [0, 3], [2, 5]])  # user 0 gains two items, user 2 one


def _histories(graph: BipartiteGraph, pairs: torch.Tensor) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for user, item in torch.cat([graph.edge_index.T, pairs]).tolist():
        out.setdefault(user, []).append(item)
    return out


@pytest.mark.parametrize("name", ["lightgcn", "freedom"])
def test_lightgcn_users_fold_in_their_whole_history(name, graph, features, modality_dims):
    torch.manual_seed(0)
    model = build_model(name, graph, features, modality_dims, embed_dim=8, **(
        {"knn_k": 3} if name == "freedom" else {})).eval()
    users, _ = model()
    after = model.user_embeddings_after(NEW_PAIRS)
    item_degree = torch.bincount(graph.edge_index[1], minlength=graph.num_items).clamp(min=1)
    for user, history in _histories(graph, NEW_PAIRS).items():
        if user not in (0, 2):
            assert torch.equal(after[user], users[user])
            continue
        # layers of the trained graph on the item side, the user's whole history on its own
        from models.graph import lightgcn_layers
        layers = lightgcn_layers(model.user_embedding, model.item_embedding, model.adjacency, 2)
        total = model.user_embedding[user]
        for _, items in layers[:-1]:
            total = total + sum(items[i] / (len(history) * item_degree[i]).sqrt()
                                for i in history)
        assert torch.allclose(after[user], total / 3, atol=1e-6)


def test_fused_lightgcn_fold_in_is_its_user_tower(graph, features, modality_dims):
    torch.manual_seed(0)
    model = build_model("early_lightgcn", graph, features, modality_dims, embed_dim=16,
                        content_dim=8, knn_weight=1.0, first_hidden=16, item_graph_k=3).eval()
    after = model.user_embeddings_after(NEW_PAIRS)
    towers = model.serving_towers()
    for user, history in _histories(graph, NEW_PAIRS).items():
        state = towers.item_states[history].unsqueeze(0)
        expected = towers.user_tower(state, torch.ones(1, len(history)),
                                     towers.user_states[user : user + 1], torch.ones(1, 1))
        assert torch.allclose(after[user], expected[0], atol=1e-5), user


def test_content_knn_user_is_the_mean_of_its_whole_history(graph, features, modality_dims):
    model = build_model("content_knn", graph, features, modality_dims)
    after = model.user_embeddings_after(NEW_PAIRS)
    for user, history in _histories(graph, NEW_PAIRS).items():
        expected = F.normalize(model.items[history].mean(0), dim=0)
        assert torch.allclose(after[user], expected, atol=1e-6)


def test_lattice_fold_in_follows_its_self_loop_propagation(graph, features, modality_dims):
    torch.manual_seed(0)
    model = build_model("lattice", graph, features, modality_dims, embed_dim=8,
                        feat_embed_dim=4, knn_k=3).eval()
    users, _ = model()
    after = model.user_embeddings_after(NEW_PAIRS)
    item_layers = [layer[graph.num_users :] for layer in model._ui_layers()]
    for user, history in _histories(graph, NEW_PAIRS).items():
        if user not in (0, 2):
            assert torch.equal(after[user], users[user])
            continue
        # u^(k+1) = (u^(k) + sum of the history's item layer k) / (|H| + 1), mean of layers
        layer = model.user_embedding[user]
        total = layer
        for items in item_layers[:-1]:
            layer = (layer + items[history].sum(0)) / (len(history) + 1)
            total = total + layer
        assert torch.allclose(after[user], total / 3, atol=1e-6)
