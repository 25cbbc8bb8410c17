"""New-item readiness: cold items, ID dropout and the item tower ``embed_new_items``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.base import BipartiteGraph
from models.registry import build_model

FUSED = ["metammf_gcn", "metammf_mf", "early_gcn", "late_gcn", "hybrid_gcn"]
HP = {"embed_dim": 16, "first_hidden": 16}


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("train", [True, False])
def test_cold_items_from_forward_equal_embed_new_items(
    name: str,
    train: bool,
    graph: BipartiteGraph,
    features: torch.Tensor,
    modality_dims: list[int],
) -> None:
    torch.manual_seed(0)
    cold = torch.tensor([0, 3, graph.num_items - 1])  # items 0 and 3 have edges in the graph
    model = build_model(name, graph, features, modality_dims, cold_items=cold, **HP)
    model.train(train)
    _, items = model()
    torch.testing.assert_close(items[cold], model.embed_new_items(features[cold]))


@pytest.mark.parametrize("name", ["metammf_gcn", "metammf_mf"])
def test_id_dropout_changes_embeddings_only_in_train_mode(
    name: str,
    graph: BipartiteGraph,
    features: torch.Tensor,
    modality_dims: list[int],
) -> None:
    torch.manual_seed(0)
    model = build_model(name, graph, features, modality_dims, id_dropout=0.5, **HP)
    plain = build_model(name, graph, features, modality_dims, **HP)
    plain.load_state_dict(model.state_dict())
    model.eval()
    plain.eval()
    eval_items = model()[1]
    torch.testing.assert_close(model()[1], eval_items)
    torch.testing.assert_close(plain()[1], eval_items)
    model.train()
    train_items = model()[1]
    assert not torch.allclose(train_items, eval_items)  # some items lost e_c (and neighbours)
    model.eval()
    torch.testing.assert_close(model()[1], eval_items)


def test_id_dropout_replaces_the_id_part_with_unknown(
    graph: BipartiteGraph,
    features: torch.Tensor,
    modality_dims: list[int],
) -> None:
    torch.manual_seed(0)
    model = build_model("metammf_mf", graph, features, modality_dims, id_dropout=0.5, **HP)
    model.train()
    items = model()[1]
    id_part = items[:, model.fusion_dim :]
    dropped = (id_part == model.unknown_item).all(1)
    kept = (id_part == model.item_id_embedding).all(1)
    assert dropped.any() and kept.any() and bool((dropped ^ kept).all())


def test_cold_item_edges_are_removed_from_the_graph(
    graph: BipartiteGraph,
    features: torch.Tensor,
    modality_dims: list[int],
) -> None:
    model = build_model("metammf_gcn", graph, features, modality_dims, cold_items=[0], **HP)
    dense = model.adjacency.users_from_items.to_dense()
    assert (graph.edge_index[1] == 0).any() and dense[:, 0].abs().sum() == 0


def test_cold_item_gets_trained_unknown_vector(
    graph: BipartiteGraph,
    features: torch.Tensor,
    modality_dims: list[int],
) -> None:
    model = build_model("metammf_gcn", graph, features, modality_dims, cold_items=[2], **HP)
    model.embed_new_items(features[:2]).sum().backward()
    assert model.unknown_item.grad is not None and model.unknown_item.grad.abs().sum() > 0
    assert model.item_id_embedding.grad is None  # the tower never reads an ID embedding


def test_embed_new_items_rejects_wrong_width(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    model = build_model("metammf_gcn", graph, features, modality_dims, **HP)
    with pytest.raises(ValueError, match="features must be"):
        model.embed_new_items(torch.randn(2, features.shape[1] + 1))


def test_vbpr_cold_items_equal_embed_new_items(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    cold = torch.tensor([1, 4])
    model = build_model("vbpr", graph, features, modality_dims, embed_dim=16, cold_items=cold)
    torch.testing.assert_close(model()[1][cold], model.embed_new_items(features[cold]))


@pytest.mark.parametrize("name", ["lightgcn", "bpr"])
def test_id_only_models_accept_cold_items(graph: BipartiteGraph, name: str) -> None:
    model = build_model(name, graph, None, [], embed_dim=8, cold_items=torch.tensor([0]))
    assert model()[1].shape == (graph.num_items, 8)


def test_vbpr_embeds_new_items_without_gamma(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int]
) -> None:
    model = build_model("vbpr", graph, features, modality_dims, embed_dim=16)
    new = model.embed_new_items(features[:3])
    assert new.shape == (3, 16)
    assert torch.equal(new[:, :8], torch.zeros(3, 8))
    torch.testing.assert_close(new[:, 8:], model()[1][:3, 8:])


@pytest.mark.parametrize("name", ["lightgcn", "bpr"])
def test_id_only_models_refuse_new_items(
    name: str, graph: BipartiteGraph, features: torch.Tensor
) -> None:
    model = build_model(name, graph, None, [], embed_dim=8)
    assert not model.uses_features
    with pytest.raises(NotImplementedError, match="new item"):
        model.embed_new_items(features[:2])


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_item_tower_exports_to_onnx(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int], tmp_path: Path
) -> None:
    """The service's item tower (fusion -> [e_m ; unknown] -> self path) is ONNX-exportable."""
    ort = pytest.importorskip("onnxruntime")
    model = build_model("metammf_gcn", graph, features, modality_dims, **HP).eval()

    class ItemTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model.embed_new_items(x)

    path = tmp_path / "item_tower.onnx"
    torch.onnx.export(
        ItemTower(),
        (features[:2],),
        str(path),
        input_names=["features"],
        output_names=["embedding"],
        dynamic_axes={"features": {0: "batch"}, "embedding": {0: "batch"}},
        dynamo=False,
    )
    got = ort.InferenceSession(str(path)).run(None, {"features": features.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), model.embed_new_items(features).detach())


def test_standardize_z_scores_features_inside_the_model(graph, features, modality_dims) -> None:
    model = build_model("metammf_gcn", graph, features * 50 + 7, modality_dims, standardize=True)
    plain = build_model("metammf_gcn", graph, features, modality_dims, standardize=True)
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    # an affine change of the raw features is undone by the z-scoring
    assert torch.allclose(model()[1], plain()[1], atol=1e-4)
    assert torch.allclose(
        model.embed_new_items(features[:3] * 50 + 7), plain.embed_new_items(features[:3]), atol=1e-4
    )
