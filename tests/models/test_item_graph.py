"""The item-item content graph: exact neighbours, FREEDOM's weights, placement of new items."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.base import BipartiteGraph, TrainingBatch
from models.graph import degree_sensitive_sample
from models.item_graph import (
    ContentNeighbourGraph,
    mean_graph,
    neighbour_rows,
    top_k_neighbours,
)
from models.registry import build_model


def _brute_force(keys: torch.Tensor, k: int, candidates: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(keys, dim=1)
    similarity = unit @ unit[candidates].T
    return candidates[similarity.topk(k, dim=1).indices]


def test_neighbours_are_the_exact_top_k_among_candidates_in_any_chunking() -> None:
    keys = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    candidates = torch.arange(0, 50, 2)
    expected = _brute_force(keys, 4, candidates)
    for chunk in (3, 7, 2048):
        found, similarity = top_k_neighbours(keys, 4, candidates, chunk=chunk)
        assert torch.equal(found, expected)
        assert torch.allclose(similarity, F.cosine_similarity(keys.unsqueeze(1), keys[found], -1),
                              atol=1e-6)


def test_an_item_placed_as_new_never_finds_itself() -> None:
    keys = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    candidates = torch.arange(20)  # items 20..29 are not candidates (no interactions)
    with_self, as_new = neighbour_rows(keys, 3, candidates)
    assert torch.equal(with_self[:20, 0], torch.arange(20))  # a candidate is its own nearest
    assert not (as_new == torch.arange(30).unsqueeze(1)).any()
    assert torch.equal(with_self[20:], as_new[20:])  # outside the candidates: the same rows
    assert torch.equal(as_new[:20], _brute_force_without_self(keys, 3, candidates)[:20])


def _brute_force_without_self(keys, k, candidates):
    unit = F.normalize(keys, dim=1)
    similarity = unit @ unit[candidates].T
    similarity[candidates, torch.arange(len(candidates))] = -2.0
    return candidates[similarity.topk(k, dim=1).indices]


def test_freedom_graph_is_a_weighted_neighbour_mean() -> None:
    """``D^-1/2 A D^-1/2`` of a binary top-k graph is a mean over the k neighbours."""
    image = torch.tensor([[0, 1], [1, 2], [2, 0]])
    audio = torch.tensor([[1, 2], [1, 0], [0, 1]])
    graph = mean_graph([image, audio], [0.25, 0.75], 3).to_dense()
    x = torch.randn(3, 4)
    expected = torch.stack([0.25 * x[image[i]].mean(0) + 0.75 * x[audio[i]].mean(0)
                            for i in range(3)])
    assert torch.allclose(graph @ x, expected, atol=1e-6)
    assert torch.allclose(graph.sum(1), torch.ones(3))


def test_placing_a_new_item_reproduces_its_graph_row() -> None:
    generator = torch.Generator().manual_seed(2)
    keys = [torch.randn(25, 6, generator=generator), torch.randn(25, 3, generator=generator)]
    warm = torch.arange(25) < 18
    graph = ContentNeighbourGraph(4, [0.3, 0.7], 2, torch.nonzero(warm)[:, 0])
    graph.build(keys)
    table = torch.randn(25, 5, generator=generator)
    rows = graph.smooth_as_new(table)
    pool = [F.normalize(k[warm], dim=1) for k in keys]
    placed = graph.place([k[~warm] for k in keys], pool, table[warm])
    assert torch.allclose(placed, rows[~warm], atol=1e-6)


def test_graph_tables_come_back_with_the_weights() -> None:
    keys = [torch.randn(12, 4, generator=torch.Generator().manual_seed(3))]
    graph = ContentNeighbourGraph(3, None, 1, torch.arange(12))
    graph.build(keys)
    other = ContentNeighbourGraph(3, None, 1, torch.arange(12))
    other.build([torch.randn(12, 4, generator=torch.Generator().manual_seed(4))])
    other.load_state_dict(graph.state_dict())
    x = torch.randn(12, 2)
    assert torch.equal(other.smooth(x), graph.smooth(x))  # the operators follow the tables


def test_degree_sensitive_pruning_drops_popular_pairs_first() -> None:
    # user 0 and item 0 are hubs; the edges between leaves should survive more often
    edges = [(0, i) for i in range(1, 20)] + [(u, 0) for u in range(1, 20)]
    edges += [(u, u) for u in range(1, 20)]
    graph = BipartiteGraph(20, 20, torch.tensor(edges).T)
    leaves = hubs = 0
    for seed in range(40):
        kept = degree_sensitive_sample(graph, 0.5, torch.Generator().manual_seed(seed))
        assert kept.edge_index.shape[1] == len(edges) // 2
        pairs = kept.edge_index.T.tolist()
        leaves += sum(u == i and u > 0 for u, i in pairs)
        hubs += sum((u == 0) != (i == 0) for u, i in pairs)
    assert leaves / 19 > hubs / 38  # per edge, a leaf-leaf edge is kept more often


def _graph_model(graph: BipartiteGraph, features: torch.Tensor, dims: list[int], **extra):
    torch.manual_seed(0)
    return build_model("early_lightgcn", graph, features, dims, embed_dim=16, content_dim=8,
                       knn_weight=1.0, item_graph_k=3, first_hidden=16, **extra)


def _without_graph(with_graph, graph, features, dims):
    """The same model and weights without the item graph."""
    torch.manual_seed(0)
    without = build_model("early_lightgcn", graph, features, dims, embed_dim=16, content_dim=8,
                          knn_weight=1.0, first_hidden=16).eval()
    without.load_state_dict(with_graph.state_dict(), strict=False)
    return without


def test_item_graph_adds_content_neighbours_to_the_id_half(graph, features, modality_dims):
    with_graph = _graph_model(graph, features, modality_dims).eval()
    without = _without_graph(with_graph, graph, features, modality_dims)
    users, items = with_graph()
    plain_users, plain_items = without()
    assert torch.allclose(users, plain_users)  # the user side is LightGCN's
    warm = ~with_graph.new_mask
    graph_part = with_graph.item_graph.smooth(with_graph.item_id_embedding)
    width = with_graph.content_width
    assert torch.allclose(items[warm, width:], plain_items[warm, width:] + graph_part[warm],
                          atol=1e-6)


def test_a_new_item_lands_among_its_neighbours(graph, features, modality_dims):
    """Its ID half is the unknown vector plus its neighbours' IDs: the item tower's answer."""
    model = _graph_model(graph, features, modality_dims).eval()
    new = torch.nonzero(model.new_mask)[:, 0]
    assert len(new)
    _, items = model()
    assert torch.allclose(model.embed_new_items(features[new]), items[new], atol=1e-6)
    # a new item with the very features of a warm one finds that one's neighbours
    warm = torch.nonzero(~model.new_mask)[:, 0][:1]
    placed = model.place_new_items(model.conditioner(features[warm]))
    expected = model.item_graph.smooth(model.item_id_embedding)[warm]
    assert torch.allclose(placed, expected, atol=1e-6)


def test_graph_from_fused_features_is_rebuilt_every_epoch(graph, features, modality_dims):
    model = _graph_model(graph, features, modality_dims, item_graph_source="fused")
    before = model.item_graph.with_self.clone()
    with torch.no_grad():
        for parameter in model.fusion.parameters():
            parameter.normal_()
    model.begin_epoch()
    assert not torch.equal(model.item_graph.with_self, before)
    for mine, copy in zip(model.fusion.parameters(), model.graph_fusion.parameters(),
                          strict=True):
        assert torch.equal(mine, copy) and not copy.requires_grad
    # the service's placement reads the same frozen copy as the graph
    model.eval()
    new = torch.nonzero(model.new_mask)[:, 0]
    assert torch.allclose(model.embed_new_items(features[new]), model()[1][new], atol=1e-6)


def test_item_graph_trains_through_the_new_item_path(graph, features, modality_dims):
    model = _graph_model(graph, features, modality_dims, edge_dropout=0.5).train()
    model.begin_epoch()
    assert model.train_adjacency is not model.adjacency
    users, positives = graph.edge_index
    batch = TrainingBatch(users, positives, (positives + 1) % graph.num_items)
    loss = torch.stack(list(model.training_losses(batch).values())).sum()
    loss.backward()
    assert model.item_id_embedding.grad.abs().sum() > 0
    assert model.unknown_item.grad.abs().sum() > 0


def test_graph_for_new_items_only_leaves_warm_items_alone(graph, features, modality_dims):
    with_graph = _graph_model(graph, features, modality_dims, item_graph_warm=False).eval()
    without = _without_graph(with_graph, graph, features, modality_dims)
    _, items = with_graph()
    _, plain = without()
    warm, new = ~with_graph.new_mask, with_graph.new_mask
    assert torch.allclose(items[warm], plain[warm])
    assert not torch.allclose(items[new], plain[new])  # new items are still placed
    assert torch.allclose(with_graph.embed_new_items(features[new]), items[new], atol=1e-6)
