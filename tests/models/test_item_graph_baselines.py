"""FREEDOM and LATTICE as their authors' code computes them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.base import TrainingBatch
from models.graph import lightgcn_propagate
from models.registry import build_model


def _batch(graph) -> TrainingBatch:
    users, positives = graph.edge_index
    return TrainingBatch(users, positives, (positives + 1) % graph.num_items)


def test_freedom_items_are_lightgcn_plus_the_frozen_neighbour_mean(graph, features,
                                                                    modality_dims):
    torch.manual_seed(0)
    model = build_model("freedom", graph, features, modality_dims, embed_dim=8, knn_k=3,
                        modality_weights=[0.1, 0.9]).eval()
    users, items = model()
    ui_users, ui_items = lightgcn_propagate(model.user_embedding, model.item_embedding,
                                            model.adjacency, 2)
    # the raw features' top-3 cosine neighbours per modality, mixed 0.1 / 0.9
    blocks = torch.split(features, modality_dims, dim=1)
    expected = torch.zeros_like(model.item_embedding)
    for block, weight in zip(blocks, (0.1, 0.9), strict=True):
        unit = F.normalize(block, dim=1)
        neighbours = (unit @ unit.T).topk(3, dim=1).indices
        expected = expected + weight * model.item_embedding[neighbours].mean(1)
    assert torch.allclose(users, ui_users)
    assert torch.allclose(items, ui_items + expected, atol=1e-6)


def test_freedom_prunes_edges_in_training_only(graph, features, modality_dims):
    model = build_model("freedom", graph, features, modality_dims, embed_dim=8, knn_k=3,
                        edge_dropout=0.5)
    model.train()
    model.begin_epoch()
    kept = model.train_adjacency.users_from_items.to_dense()
    full = model.adjacency.users_from_items.to_dense()
    assert (kept > 0).sum() == int(graph.edge_index.shape[1] * 0.5)
    assert ((kept > 0) & (full == 0)).sum() == 0  # only real edges survive
    model.eval()
    eval_users, _ = model()
    assert torch.allclose(eval_users, lightgcn_propagate(model.user_embedding,
                                                         model.item_embedding,
                                                         model.adjacency, 2)[0])


def test_freedom_modality_loss_trains_the_projections(graph, features, modality_dims):
    model = build_model("freedom", graph, features, modality_dims, embed_dim=8, knn_k=3,
                        reg_weight=0.1)
    losses = model.training_losses(_batch(graph))
    assert set(losses) == {"bpr", "modality_bpr"}
    sum(losses.values()).backward()
    for projection in model.projections:
        assert projection.weight.grad.abs().sum() > 0


def test_lattice_learns_its_graph_on_the_first_batch_of_an_epoch(graph, features,
                                                                 modality_dims):
    torch.manual_seed(0)
    model = build_model("lattice", graph, features, modality_dims, embed_dim=8,
                        feat_embed_dim=4, knn_k=3)
    model.train()
    model.begin_epoch()
    grads = []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        sum(model.training_losses(_batch(graph)).values()).backward()
        grads.append((model.modal_weight.grad, model.projections[0].weight.grad))
    assert grads[0][0] is not None and grads[0][0].abs().sum() > 0
    assert grads[0][1].abs().sum() > 0
    assert grads[1][0] is None and grads[1][1] is None  # detached for the rest of the epoch


def test_lattice_items_add_the_normalised_graph_part(graph, features, modality_dims):
    torch.manual_seed(0)
    model = build_model("lattice", graph, features, modality_dims, embed_dim=8,
                        feat_embed_dim=4, knn_k=3, lambda_coeff=1.0).eval()
    _, items = model()
    layers = model._ui_layers()
    ui_items = torch.stack(layers).mean(0)[graph.num_users :]
    # lambda 1: the original graphs alone, mixed by the softmax of [0.5, 0.5]
    expected = torch.zeros_like(model.item_embedding)
    for block in torch.split(features, modality_dims, dim=1):
        unit = F.normalize(block, dim=1)
        similarity = unit @ unit.T
        values, neighbours = similarity.topk(3, dim=1)
        adjacency = torch.zeros_like(similarity).scatter_(1, neighbours, values)
        degree = adjacency.sum(1).rsqrt()
        normalised = degree.unsqueeze(1) * adjacency * degree.unsqueeze(0)
        expected = expected + 0.5 * normalised @ model.item_embedding
    assert torch.allclose(items, ui_items + F.normalize(expected, dim=1), atol=1e-5)
