"""MetaMMF fusion (eqs. 7-15) and the static fusion controls of Table 3."""

from __future__ import annotations

import pytest
import torch

from models.fusion import (
    EarlyFusion,
    HybridFusion,
    LateFusion,
    MetaFusionLayer,
    MetaInfoExtractor,
    MetaMMFFusion,
    build_fusion,
    tower_widths,
)


@pytest.mark.parametrize("static_weight", [True, False])
def test_factored_cp_layer_equals_full_tensor_layer(static_weight: bool) -> None:
    torch.manual_seed(0)
    cp = MetaFusionLayer(40, 24, meta_dim=5, rank=16, static_weight=static_weight)
    full = cp.to_full()
    assert full.mode == "full" and full.T.shape == (24, 40, 5)
    x, s = torch.randn(11, 40), torch.rand(11, 5)
    torch.testing.assert_close(cp(x, s), full(x, s), atol=1e-5, rtol=1e-5)
    # the per-item matrices really are W + T x3 s_i (eq. 15)
    weights = full.item_weights(s)
    direct = torch.stack([weights[b] @ x[b] for b in range(11)])
    torch.testing.assert_close(full(x, s), direct, atol=1e-5, rtol=1e-5)


def test_cp_tensor_matches_eq14_elementwise() -> None:
    torch.manual_seed(0)
    layer = MetaFusionLayer(5, 4, meta_dim=3, rank=2)
    t = layer.cp_tensor()
    p, q, z = 3, 1, 2
    expected = sum(layer.A[p, r] * layer.B[q, r] * layer.C[z, r] for r in range(2))
    torch.testing.assert_close(t[p, q, z], expected)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_factored_fusion_tower_equals_full_tensor_tower(num_layers: int) -> None:
    torch.manual_seed(0)
    cp = MetaMMFFusion(30, out_dim=8, num_layers=num_layers, first_hidden=32, meta_hidden=16)
    full = cp.to_full()
    assert all(layer.mode == "full" for layer in full.layers)
    x = torch.randn(13, 30)
    torch.testing.assert_close(cp(x), full(x), atol=1e-5, rtol=1e-5)


def test_static_weight_false_removes_w() -> None:
    torch.manual_seed(0)
    x, zero_meta = torch.randn(4, 10), torch.zeros(4, 5)
    dynamic_only = MetaFusionLayer(10, 6, static_weight=False)
    assert dynamic_only.W is None
    assert "W" not in dict(dynamic_only.named_parameters())
    assert torch.equal(dynamic_only(x, zero_meta), torch.zeros(4, 6))  # W_i = T x3 0 = 0
    with_static = MetaFusionLayer(10, 6)
    torch.testing.assert_close(with_static(x, zero_meta), x @ with_static.W.t())
    tower = MetaMMFFusion(10, 4, num_layers=2, first_hidden=8, static_weight=False)
    assert not any(name.endswith(".W") for name, _ in tower.named_parameters())


def test_tower_widths_halve_down_to_out_dim() -> None:
    assert tower_widths(2276, 32, 4, 1024) == [2276, 1024, 512, 256, 32]  # paper, MovieLens
    assert tower_widths(384, 32, 1, 256) == [384, 32]  # paper, TikTok
    assert tower_widths(256, 32, 3, 256) == [256, 256, 128, 32]
    assert tower_widths(256, 32, 5, 64) == [256, 64, 32, 32, 32, 32]
    fusion = MetaMMFFusion(100, out_dim=8, num_layers=3, first_hidden=32)
    shapes = [(layer.in_dim, layer.out_dim) for layer in fusion.layers]
    assert shapes == [(100, 32), (32, 16), (16, 8)]
    early = EarlyFusion(100, out_dim=8, num_layers=3, first_hidden=32)
    linears = [m for m in early.tower if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(32, 100), (16, 32), (8, 16)]
    assert all(m.bias is None for m in linears)


def test_extractor_is_three_relu_layers_with_bias() -> None:
    torch.manual_seed(0)
    extractor = MetaInfoExtractor(12, hidden=64, meta_dim=5)
    x = torch.randn(20, 12)
    assert extractor(x).shape == (20, 5)
    assert (extractor(x) >= 0).all()
    layers = (extractor.phi_in, extractor.phi_mid, extractor.phi_out)
    assert [tuple(m.weight.shape) for m in layers] == [(64, 12), (64, 64), (5, 64)]
    assert all(m.bias is not None for m in layers)


def test_fusion_is_item_specific() -> None:
    """Two items get different effective matrices W_i (the point of dynamic fusion)."""
    torch.manual_seed(0)
    fusion = MetaMMFFusion(10, 4)
    x = torch.randn(2, 10)
    s = fusion.extractor(x)
    weights = fusion.layers[0].item_weights(s)
    assert not torch.allclose(weights[0], weights[1])


def test_late_fusion_averages_modality_towers_and_hybrid_averages_both() -> None:
    torch.manual_seed(0)
    dims = [6, 4]
    x = torch.randn(5, 10)
    late = LateFusion(dims, out_dim=3, num_layers=2, first_hidden=8)
    expected = 0.5 * (late.towers[0](x[:, :6]) + late.towers[1](x[:, 6:]))
    torch.testing.assert_close(late(x), expected)
    hybrid = HybridFusion(dims, out_dim=3, num_layers=2, first_hidden=8)
    torch.testing.assert_close(hybrid(x), 0.5 * (hybrid.early(x) + hybrid.late(x)))


@pytest.mark.parametrize("kind", ["metammf", "early", "late", "hybrid"])
def test_build_fusion_maps_to_out_dim(kind: str) -> None:
    fusion = build_fusion(kind, [6, 4], out_dim=3, num_layers=2, first_hidden=8)
    assert fusion(torch.randn(5, 10)).shape == (5, 3)
    assert fusion.out_dim == 3


def test_build_fusion_rejects_unknown_kind_and_argument() -> None:
    with pytest.raises(ValueError, match="metammf"):
        build_fusion("attention", [4])
    with pytest.raises(TypeError):
        build_fusion("early", [4], rank=3)


@pytest.mark.parametrize("static_weight", [True, False])
def test_dynamic_norms_in_cp_form_equal_the_materialised_matrices(static_weight: bool) -> None:
    torch.manual_seed(0)
    layer = MetaFusionLayer(7, 5, meta_dim=3, rank=4, mode="cp", static_weight=static_weight)
    s = torch.randn(6, 3)
    dynamic = torch.einsum("pqz,bz->bpq", layer.cp_tensor(), s)
    torch.testing.assert_close(layer.dynamic_norms(s), dynamic.flatten(1).norm(dim=1))
    torch.testing.assert_close(layer.to_full().dynamic_norms(s), layer.dynamic_norms(s))
    assert (layer.static_norm() > 0) == static_weight
