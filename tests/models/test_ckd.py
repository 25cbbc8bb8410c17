"""CKD as a loss plug-in: counterfactual modality views, the specific and generic terms and the
counterfactual re-weighting (models.ckd), on the model fixtures' two-modality graph."""

from __future__ import annotations

import pytest
import torch

from models.base import BipartiteGraph, Recommender, TrainingBatch
from models.ckd import CounterfactualDistillation, TeacherScores, balance_weights
from models.crossan import PAD
from models.registry import build_model

MULTIMODAL = ["metammf_lightgcn", "early_lightgcn", "metammf_gcn", "late_gcn", "vbpr"]
SMALL = {"embed_dim": 8}


def _model(name: str, graph: BipartiteGraph, features: torch.Tensor, dims: list[int]):
    extra = {"knn_weight": 1.0} if name.endswith("_lightgcn") else {}  # the fixed kNN part too
    torch.manual_seed(0)
    return build_model(name, graph, features, dims, **SMALL, **extra).eval()


def _batch(graph: BipartiteGraph) -> TrainingBatch:
    users, positives = graph.edge_index
    return TrainingBatch(users, positives, (positives + 1) % graph.num_items)


@pytest.mark.parametrize("name", MULTIMODAL)
def test_a_view_ignores_the_other_modality_and_the_model_comes_back_whole(
    name: str, graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int],
) -> None:
    model = _model(name, graph, features, modality_dims)
    assert model.num_modalities == 2
    with torch.no_grad():
        before = model()
        with model.modality_view({0}):
            only_first = model()
        # shuffle the second modality among the items with interactions (its mean, the
        # neutral value, and its conditioning statistics stay): the first's view is unmoved
        changed = features.clone()
        warm = graph.item_degree().nonzero().squeeze(1)
        changed[warm, modality_dims[0]:] = features[warm.flip(0), modality_dims[0]:]
        other = _model(name, graph, changed, modality_dims)
        other.load_state_dict(model.state_dict())
        with other.modality_view({0}):
            only_first_changed = other()
        after = model()
    for a, b in zip(only_first, only_first_changed, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(before[1], only_first[1])  # the view is a different model
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)  # leaving the view restores the features exactly


@pytest.mark.parametrize("name", ["metammf_lightgcn", "vbpr"])
def test_rows_of_views_computed_together_equal_each_whole_view(
    name: str, graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int],
) -> None:
    model = _model(name, graph, features, modality_dims)
    keeps = [{0}, {1}, {0, 1}]
    users = torch.tensor([3, 0, 3, 6])
    items = torch.tensor([8, 1, 1, 0, 5])  # item 8 has no interactions: the new-item path
    with torch.no_grad():
        together = model.view_vectors(keeps, users, items)
        for keep, (user_rows, item_rows) in zip(keeps, together, strict=True):
            with model.modality_view(keep):
                alone = model()
            assert torch.allclose(user_rows, alone[0][users], atol=1e-6)
            assert torch.allclose(item_rows, alone[1][items], atol=1e-6)
        assert torch.allclose(together[2][1], model()[1][items], atol=1e-6)  # all kept


@pytest.mark.parametrize("tables", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_margins_summed_part_by_part_equal_those_of_the_views_vectors(
    training: bool, tables: bool, graph: BipartiteGraph, features: torch.Tensor,
    modality_dims: list[int], monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not tables:  # the fixed kNN part from gathered rows, as on a large catalogue
        monkeypatch.setattr("models.base.SCORE_TABLE_BYTES", 0)
    model = _model("metammf_lightgcn", graph, features, modality_dims).train(training)
    with torch.no_grad():  # a cold scale and fused weight away from 1 reach the new items
        model.cold_scale.fill_(0.7)
        model.new_item_fused_weight.fill_(0.4)
    keeps = [{0}, {1}, {0, 1}]
    users = torch.tensor([3, 0, 3, 6, 1])
    first = torch.tensor([8, 1, 1, 0, 5])  # item 8 has no interactions: the new-item path
    second = torch.tensor([2, 8, 4, 4, 0])
    by_parts = model.view_margins(keeps, users, first, second)
    by_vectors = Recommender.view_margins(model, keeps, users, first, second)
    for part, whole in zip(by_parts, by_vectors, strict=True):
        assert torch.allclose(part, whole, atol=1e-6)
    built = model.__dict__["_knn_scores"].values()  # a table, or narrowed factors
    assert built and all((scores.table is not None) == tables for scores in built)
    gradients = []
    for margins in (by_parts, by_vectors):
        model.zero_grad()
        torch.stack(margins[:2]).square().sum().backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters()
                          if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys() and "log_knn_weight" in gradients[0]
    for name, grad in gradients[0].items():
        assert torch.allclose(grad, gradients[1][name], atol=1e-6), name


def test_a_prepared_teacher_gives_its_vectors_margins() -> None:
    gen = torch.Generator().manual_seed(0)
    # items of rank 3 in 6 dimensions, as a uni-modal view's constant modality leaves them
    items = torch.randn(9, 3, generator=gen) @ torch.randn(3, 6, generator=gen)
    teacher = TeacherScores(torch.randn(7, 6, generator=gen), items)
    triples = (torch.randint(7, (40,), generator=gen), *torch.randint(9, (2, 40), generator=gen))
    tabled = teacher.prepared()
    assert tabled.table is not None and tabled.table.shape == (7, 9)
    assert torch.allclose(tabled.margins(*triples), teacher.margins(*triples), atol=1e-5)
    narrow = teacher.prepared(max_bytes=7 * 9 * 4 - 1)  # no table: vectors in 3 dimensions
    assert narrow.table is None and narrow.items.shape == (9, 3) and narrow.users.shape == (7, 3)
    assert torch.allclose(narrow.margins(*triples), teacher.margins(*triples), atol=1e-5)


def test_a_training_step_propagates_the_ids_once_for_the_model_and_its_views(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import models.fusion_lightgcn as module

    model = _model("metammf_lightgcn", graph, features, modality_dims).train()
    model.add_loss_plugin(CounterfactualDistillation(
        _teachers_from_views(model, 2), graph.edge_index[0].unique(), graph.num_items,
        generic_triples=64))
    calls = []
    real = module.lightgcn_propagate
    monkeypatch.setattr(module, "lightgcn_propagate",
                        lambda *args: calls.append(1) or real(*args))
    named = model.training_losses(_batch(graph))
    assert {"bpr", "ckd_specific", "ckd_generic"} <= set(named) and len(calls) == 1
    sum(named.values()).backward()  # one propagation, its gradient from every term
    batch = _batch(graph)  # outside a step: computed afresh
    model.view_margins([{0}], batch.users, batch.positives, batch.negatives)
    assert len(calls) == 2


def test_id_only_models_have_no_views(graph: BipartiteGraph, features: torch.Tensor) -> None:
    model = build_model("lightgcn", graph, None, [])
    assert model.num_modalities == 0
    with pytest.raises(NotImplementedError, match="no modality features"):
        model.neutral_features({0})


def test_weights_sum_to_the_modality_count_and_match_the_authors_two_modality_form() -> None:
    gen = torch.Generator().manual_seed(0)
    joint, alone = torch.randn(50, generator=gen), torch.randn(50, 2, generator=gen)
    weights = balance_weights(joint, alone, alone.flip(1))
    assert torch.allclose(weights.sum(1), torch.full((50,), 2.0))
    # train_kd.py: c_t = clamp((joint - visual) / textual), ratio_t = 1 - (c_t - c_v)/(c_t + c_v)
    c = ((joint.unsqueeze(1) - alone.flip(1)) / alone).clamp(1e-8, 10)
    authors = 1 - (c[:, 0] - c[:, 1]) / (c[:, 0] + c[:, 1])
    assert torch.allclose(weights[:, 0], authors, atol=1e-5)
    assert torch.allclose(weights[:, 1], 2 - authors, atol=1e-5)
    # a modality whose uni-modal knowledge the joint margin uses less gets the larger weight
    slow = balance_weights(torch.tensor([2.0]), torch.tensor([[1.0, 1.0]]),
                           torch.tensor([[1.9, 0.5]]))  # removing m=0 costs 0.1, m=1 costs 1.5
    assert slow[0, 0] > 1.0 > slow[0, 1]
    three = balance_weights(joint, torch.randn(50, 3, generator=gen),
                            torch.randn(50, 3, generator=gen))
    assert torch.allclose(three.sum(1), torch.full((50,), 3.0), atol=1e-5)
    undefined = balance_weights(torch.zeros(1), torch.zeros(1, 2), torch.zeros(1, 2))
    assert torch.allclose(undefined, torch.ones(1, 2))  # 0/0 counts as 1


def _teachers_from_views(model, count: int) -> list[TeacherScores]:
    teachers = []
    with torch.no_grad():
        for m in range(count):
            with model.modality_view({m}):
                contexts, items = model.context_embeddings()
            teachers.append(TeacherScores(contexts.clone(), items.clone()))
    return teachers


@pytest.mark.parametrize("name", ["metammf_lightgcn", "vbpr"])
def test_the_plugin_adds_its_terms_and_they_reach_the_weights(
    name: str, graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int],
) -> None:
    model = _model(name, graph, features, modality_dims)
    batch = _batch(graph)
    own = set(model.training_losses(batch))
    # teachers that are the student's own views: the hinge is exactly zero
    same = CounterfactualDistillation(_teachers_from_views(model, 2), graph.edge_index[0].unique(),
                                      graph.num_items, generic_triples=64)
    assert abs(float(same(model, batch)["ckd_specific"].detach())) < 1e-7  # rounding only
    # teachers with larger margins: the hinge is positive and its gradient reaches the model
    strong = [TeacherScores(3 * t.users, 3 * t.items) for t in _teachers_from_views(model, 2)]
    plugin = CounterfactualDistillation(strong, graph.edge_index[0].unique(), graph.num_items,
                                        generic_triples=64)
    model.add_loss_plugin(plugin)
    model.train()
    named = model.training_losses(batch)
    assert set(named) == own | {"ckd_specific", "ckd_generic"}
    assert float(named["ckd_specific"]) > 0.0 and float(named["ckd_generic"]) > 0.0
    (named["ckd_specific"] + named["ckd_generic"]).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    weights = plugin.mean_weights()
    assert len(weights) == 2 and abs(sum(weights) - 2.0) < 1e-5
    # the plug-in is not part of the model's state: a checkpoint reloads into a bare model
    assert set(model.state_dict()) == set(_model(name, graph, features,
                                                 modality_dims).state_dict())


def test_the_ablations_switch_their_terms(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int],
) -> None:
    model = _model("vbpr", graph, features, modality_dims).train()
    batch, users = _batch(graph), graph.edge_index[0].unique()
    teachers = _teachers_from_views(model, 2)
    terms = {
        "no_generic": CounterfactualDistillation(teachers, users, graph.num_items, generic=False),
        "no_specific": CounterfactualDistillation(teachers, users, graph.num_items,
                                                  specific=False),
        "no_teachers": CounterfactualDistillation(None, users, graph.num_items, generic=False),
    }
    assert set(terms["no_generic"](model, batch)) == {"ckd_specific"}
    assert set(terms["no_specific"](model, batch)) == {"ckd_generic"}
    without = terms["no_teachers"](model, batch)["ckd_specific"]  # each view's own BPR
    assert float(without) > 0.0
    flat = CounterfactualDistillation(teachers, users, graph.num_items, reweight=False)
    flat(model, batch)
    assert flat.mean_weights() == [1.0, 1.0]
    with pytest.raises(ValueError, match="needs teachers"):
        CounterfactualDistillation(None, users, graph.num_items)
    single = build_model("vbpr", graph, features, [sum(modality_dims)], **SMALL)
    with pytest.raises(ValueError, match="at least two modality views"):
        flat(single, batch)


def test_three_modalities_weigh_each_against_the_view_without_it(
    graph: BipartiteGraph, features: torch.Tensor,
) -> None:
    model = build_model("vbpr", graph, features, [4, 3, 3], **SMALL).train()
    plugin = CounterfactualDistillation(_teachers_from_views(model, 3),
                                        graph.edge_index[0].unique(), graph.num_items)
    named = plugin(model, _batch(graph))
    assert set(named) == {"ckd_specific", "ckd_generic"}
    assert len(plugin.mean_weights()) == 3 and abs(sum(plugin.mean_weights()) - 3.0) < 1e-5


# ---- a sequential model (CROSSAN): its user is the history read up to the item scored ----

STATE = 8  # width of one frozen state; two kept layers per expert


def _sequential(name: str = "crossan_id") -> tuple[Recommender, BipartiteGraph, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    users, items = [], []
    for user in range(12):  # each user walks 2 to 6 items along the ids
        start, length = torch.randint(15, (1,), generator=gen), torch.randint(2, 7, (1,),
                                                                             generator=gen)
        users += [user] * int(length)
        items += [(int(start) + k) % 15 for k in range(int(length))]
    graph = BipartiteGraph(12, 15, torch.tensor([users, items]))
    features = torch.randn(15, 2 * 2 * STATE, generator=gen)
    torch.manual_seed(0)
    sizes = {"adapter_dim": 4} if name in ("crossan", "crossan_id", "indsan") else {}
    if name != "sasrec":
        sizes["state_dim"] = STATE
    model = build_model(name, graph, features if name != "sasrec" else None,
                        [2 * STATE, 2 * STATE], embed_dim=8, max_length=3, **sizes)
    with torch.no_grad():  # no zero-initialised paths: every part of the views counts
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model.eval(), graph, features


def test_a_sequential_context_is_the_user_just_before_the_item_or_after_all_of_them() -> None:
    model, graph, _ = _sequential()
    users, items = graph.edge_index
    with torch.no_grad():
        contexts, vectors = model.context_embeddings()
        final, all_items = model()
    assert contexts.shape == (graph.edge_index.shape[1] + 12, 8)
    assert torch.allclose(vectors, all_items)
    for user, item in zip(users.tolist(), items.tolist(), strict=True):
        sequence = items[users == user].tolist()
        before = sequence[: sequence.index(item)][-3:]  # never the item itself
        row = model.score_contexts(torch.tensor([user]), torch.tensor([item]))
        expected = torch.tensor([[PAD] * (3 - len(before)) + before])
        with torch.no_grad():
            assert torch.allclose(contexts[row], model.encode_histories(expected, vectors),
                                  atol=1e-5)
    chosen = [0, 5, 11]  # and for each an item it has never seen
    unseen = [min(set(range(15)) - set(items[users == u].tolist())) for u in chosen]
    rows = model.score_contexts(torch.tensor(chosen), torch.tensor(unseen))
    assert torch.allclose(contexts[rows], final[chosen], atol=1e-5)  # after all of them


@pytest.mark.parametrize("name", ["crossan", "crossan_id", "sasrec_text"])
def test_sequential_view_margins_equal_margins_of_each_views_contexts(name: str) -> None:
    model, graph, features = _sequential(name)
    assert model.num_modalities == 2
    gen = torch.Generator().manual_seed(3)
    users, positives = graph.edge_index
    triples = (torch.cat([users, torch.randint(12, (20,), generator=gen)]),
               torch.cat([positives, torch.randint(15, (20,), generator=gen)]),
               torch.randint(15, (len(users) + 20,), generator=gen))
    keeps = [{0}, {1}, {0, 1}]
    with torch.no_grad():
        margins = model.view_margins(keeps, *triples)
        rows = model.score_contexts(triples[0], triples[1])
        for keep, margin in zip(keeps, margins, strict=True):
            with model.modality_view(keep):
                contexts, items = model.context_embeddings()
            expected = (contexts[rows] * (items[triples[1]] - items[triples[2]])).sum(1)
            assert torch.allclose(margin, expected, atol=1e-5)
        # the view of the captions alone is blind to the hashtags (their mean stays)
        changed = features.clone()
        changed[:, 2 * STATE:] = features[torch.arange(14, -1, -1), 2 * STATE:]
        other = _sequential(name)[0]
        other.load_state_dict(model.state_dict())
        other.features = changed
        blind = other.view_margins([{0}, {0, 1}], *triples)
    assert torch.allclose(blind[0], margins[0], atol=1e-5)
    assert not torch.allclose(blind[1], margins[2], atol=1e-3)


def test_ckd_on_a_sequential_model_distils_at_each_items_context() -> None:
    model, graph, _ = _sequential()
    users, positives = graph.edge_index
    batch = TrainingBatch(users, positives, (positives + 7) % graph.num_items)
    # teachers that are the student's own views (eval mode: no dropout): the hinge is zero
    same = CounterfactualDistillation(_teachers_from_views(model, 2), users.unique(),
                                      graph.num_items, generic_triples=64)
    assert abs(float(same(model, batch)["ckd_specific"].detach())) < 1e-6
    strong = [TeacherScores(3 * t.users, 3 * t.items) for t in _teachers_from_views(model, 2)]
    plugin = CounterfactualDistillation(strong, users.unique(), graph.num_items,
                                        generic_triples=64)
    model.add_loss_plugin(plugin)
    named = model.train().training_losses(batch)
    assert set(named) == {"softmax", "ckd_specific", "ckd_generic"}
    assert float(named["ckd_specific"]) > 0.0 and float(named["ckd_generic"]) > 0.0
    (named["ckd_specific"] + named["ckd_generic"]).backward()
    for part in ("towers", "encoder", "item_residual"):  # the item side and the user side
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(part)]
        assert any(g is not None and float(g.abs().sum()) > 0 for g in grads), part
    assert abs(sum(plugin.mean_weights()) - 2.0) < 1e-5


def test_an_id_only_sequential_model_has_no_views() -> None:
    model, graph, _ = _sequential("sasrec")
    assert model.num_modalities == 0


def test_batch_triples_distils_on_a_random_subset_of_the_batch(
    graph: BipartiteGraph, features: torch.Tensor, modality_dims: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _model("vbpr", graph, features, modality_dims).train()
    batch = _batch(graph)
    seen: list[tuple[int, torch.Tensor]] = []
    real = model.view_margins
    monkeypatch.setattr(model, "view_margins", lambda keeps, users, first, second: (
        seen.append((len(users), first.clone())) or real(keeps, users, first, second)))
    plugin = CounterfactualDistillation(_teachers_from_views(model, 2),
                                        graph.edge_index[0].unique(), graph.num_items,
                                        generic_triples=16, batch_triples=5)
    named = plugin(model, batch)
    assert [count for count, _ in seen] == [5 + 16, 5]  # the views, then the joint margin
    assert set(seen[1][1].tolist()) <= set(batch.positives.tolist())
    assert named["ckd_specific"].isfinite() and named["ckd_generic"].isfinite()
    seen.clear()
    everything = CounterfactualDistillation(None, graph.edge_index[0].unique(), graph.num_items,
                                            generic=False, batch_triples=10_000)
    everything(model, batch)
    assert [count for count, _ in seen] == [len(batch.users)] * 2  # more than the batch: all
