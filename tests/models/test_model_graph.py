"""Bipartite GraphSAGE (eq. 18) and LightGCN propagation against dense and PyG references."""

from __future__ import annotations

import copy

import torch
from torch_geometric.nn import LGConv, SAGEConv

from models.base import BipartiteGraph
from models.graph import (
    BipartiteMeanAdjacency,
    BipartiteSAGE,
    SymmetricAdjacency,
    lightgcn_propagate,
)

# 3 users, 4 items; item 3 has no interactions
TINY = BipartiteGraph(3, 4, torch.tensor([[0, 0, 1, 2, 2, 2], [0, 1, 1, 0, 1, 2]]))


def _dense_eq18(sage: BipartiteSAGE, users: torch.Tensor, items: torch.Tensor) -> tuple:
    """Eq. 18 written node by node with python means."""
    act = torch.nn.functional.leaky_relu
    edges = TINY.edge_index.t().tolist()
    for layer in range(sage.num_layers):
        new_users, new_items = [], []
        for u in range(3):
            neigh = [items[i] for uu, i in edges if uu == u]
            mean = torch.stack(neigh).mean(0) if neigh else torch.zeros(items.shape[1])
            w1, w2 = sage.user_self[layer].weight, sage.user_neigh[layer].weight
            new_users.append(act(w1 @ users[u] + w2 @ mean))
        for i in range(4):
            neigh = [users[u] for u, ii in edges if ii == i]
            mean = torch.stack(neigh).mean(0) if neigh else torch.zeros(users.shape[1])
            w1, w2 = sage.item_self[layer].weight, sage.item_neigh[layer].weight
            new_items.append(act(w1 @ items[i] + w2 @ mean))
        users, items = torch.stack(new_users), torch.stack(new_items)
    return users, items


def test_bipartite_sage_matches_hand_written_eq18() -> None:
    torch.manual_seed(0)
    sage = BipartiteSAGE(5, num_layers=2)
    users, items = torch.randn(3, 5), torch.randn(4, 5)
    got = sage(users, items, BipartiteMeanAdjacency(TINY))
    want = _dense_eq18(sage, users, items)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


def test_bipartite_sage_matches_pyg_sageconv(graph: BipartiteGraph) -> None:
    torch.manual_seed(0)
    sage = BipartiteSAGE(6, num_layers=2)
    users = torch.randn(graph.num_users, 6)
    items = torch.randn(graph.num_items, 6)
    got = sage(users, items, BipartiteMeanAdjacency(graph))
    u, i = users, items
    for layer in range(2):
        convs = []
        for self_lin, neigh_lin in (
            (sage.user_self[layer], sage.user_neigh[layer]),
            (sage.item_self[layer], sage.item_neigh[layer]),
        ):
            conv = SAGEConv((6, 6), 6, aggr="mean", root_weight=True, bias=False)
            conv.lin_r.weight.data.copy_(self_lin.weight)
            conv.lin_l.weight.data.copy_(neigh_lin.weight)
            convs.append(conv)
        act = torch.nn.functional.leaky_relu
        u, i = (
            act(convs[0]((i, u), graph.edge_index.flip(0))),
            act(convs[1]((u, i), graph.edge_index)),
        )
    torch.testing.assert_close(got[0], u, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got[1], i, atol=1e-6, rtol=1e-5)


def test_neighbour_mask_leaves_masked_items_only_the_self_path() -> None:
    torch.manual_seed(0)
    sage = BipartiteSAGE(5, num_layers=2)
    users, items = torch.randn(3, 5), torch.randn(4, 5)
    adjacency = BipartiteMeanAdjacency(TINY)
    mask = torch.tensor([False, True, False, False])
    plain_users, plain_items = sage(users, items, adjacency)
    masked_users, masked_items = sage(users, items, adjacency, item_mask=mask)
    torch.testing.assert_close(masked_items[1], sage.self_path(items[1:2])[0])
    assert not torch.allclose(plain_items[1], masked_items[1])
    keep = ~mask
    torch.testing.assert_close(masked_items[keep], plain_items[keep])
    # users still aggregate from the masked item, whose layer-1 state changed
    assert not torch.allclose(masked_users[[0, 1, 2]], plain_users[[0, 1, 2]])


def test_item_without_neighbours_takes_the_self_path() -> None:
    torch.manual_seed(0)
    sage = BipartiteSAGE(5, num_layers=3)
    items = torch.randn(4, 5)
    _, out = sage(torch.randn(3, 5), items, BipartiteMeanAdjacency(TINY))
    torch.testing.assert_close(out[3], sage.self_path(items[3:])[0])


def test_sage_gradients_reach_embeddings_and_all_weights() -> None:
    torch.manual_seed(0)
    sage = BipartiteSAGE(5, num_layers=2)
    users = torch.randn(3, 5, requires_grad=True)
    items = torch.randn(4, 5, requires_grad=True)
    u, i = sage(users, items, BipartiteMeanAdjacency(TINY))
    (u @ i.t()).sum().backward()
    assert users.grad is not None and items.grad is not None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sage.parameters())


def test_adjacency_survives_deepcopy_and_dtype_change() -> None:
    adjacency = BipartiteMeanAdjacency(TINY)
    clone = copy.deepcopy(adjacency)
    x = torch.randn(3, 2)
    torch.testing.assert_close(clone.item_mean(x), adjacency.item_mean(x))
    assert adjacency.state_dict() == {}
    dense = adjacency.items_from_users.to_dense()
    torch.testing.assert_close(dense.sum(1), torch.tensor([1.0, 1.0, 1.0, 0.0]))


def test_lightgcn_propagation_matches_dense_formula_and_lgconv() -> None:
    torch.manual_seed(0)
    users, items = torch.randn(3, 4), torch.randn(4, 4)
    got_u, got_i = lightgcn_propagate(users, items, SymmetricAdjacency(TINY), num_layers=3)
    full = torch.zeros(7, 7)
    u, i = TINY.edge_index
    full[u, 3 + i] = 1.0
    full[3 + i, u] = 1.0
    deg = full.sum(1).clamp(min=1)
    norm = full / deg.sqrt()[:, None] / deg.sqrt()[None, :]
    x = torch.cat([users, items])
    layers = [x]
    for _ in range(3):
        layers.append(norm @ layers[-1])
    want = torch.stack(layers).mean(0)
    torch.testing.assert_close(torch.cat([got_u, got_i]), want)
    conv, h, outs = LGConv(), x, [x]
    edge_index = torch.nonzero(full).t()
    for _ in range(3):
        h = conv(h, edge_index)
        outs.append(h)
    torch.testing.assert_close(torch.cat([got_u, got_i]), torch.stack(outs).mean(0))
