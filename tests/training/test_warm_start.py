"""Warm start: ID-table rows follow their external ids; shared weights are copied whole."""

from __future__ import annotations

import torch

from models.base import BipartiteGraph
from models.registry import build_model
from training.warm_start import copy_weights


def _graph(num_users: int, num_items: int) -> BipartiteGraph:
    users = torch.arange(num_users).repeat_interleave(2)
    items = torch.arange(num_users * 2) % num_items
    return BipartiteGraph(num_users, num_items, torch.stack([users, items]))


def _features(num_items: int) -> torch.Tensor:
    return torch.randn(num_items, 6)


def test_rows_are_matched_by_id_and_new_rows_keep_their_initialisation() -> None:
    torch.manual_seed(0)
    old = build_model("lightgcn", _graph(4, 5), None, [])
    new = build_model("lightgcn", _graph(6, 7), None, [])
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    # the new model knows the old users in another order, plus two it never saw
    old_users, new_users = ["a", "b", "c", "d"], ["d", "x", "b", "a", "y", "c"]
    old_items, new_items = ["0", "1", "2", "3", "4"], ["4", "3", "2", "1", "0", "5", "6"]
    report = copy_weights(new, old.state_dict(), old_user_ids=old_users,
                          old_item_ids=old_items, new_user_ids=new_users,
                          new_item_ids=new_items)

    for new_row, user in enumerate(new_users):
        expected = (old.user_embedding[old_users.index(user)] if user in old_users
                    else fresh["user_embedding"][new_row])
        assert torch.equal(new.user_embedding[new_row], expected), user
    for new_row, item in enumerate(new_items):
        expected = (old.item_embedding[old_items.index(item)] if item in old_items
                    else fresh["item_embedding"][new_row])
        assert torch.equal(new.item_embedding[new_row], expected), item
    assert report.rows == {"user_embedding": 4, "item_embedding": 5} and not report.skipped


def test_shared_weights_are_copied_and_buffers_describe_the_new_data() -> None:
    torch.manual_seed(0)
    old_graph, new_graph = _graph(4, 5), _graph(5, 6)
    hparams = {"embed_dim": 8, "content_dim": 4}
    old = build_model("metammf_lightgcn", old_graph, _features(5), [3, 3], **hparams)
    new = build_model("metammf_lightgcn", new_graph, _features(6), [3, 3], **hparams)
    new_buffers = {k: v.clone() for k, v in new.named_buffers()}
    ids = [str(i) for i in range(6)]
    report = copy_weights(new, old.state_dict(), old_user_ids=ids[:4], old_item_ids=ids[:5],
                          new_user_ids=ids[:5], new_item_ids=ids)

    old_parameters = dict(old.named_parameters())
    for name, parameter in new.named_parameters():
        if name in new.user_tables or name in new.item_tables:
            rows = old_parameters[name].shape[0]
            assert torch.equal(parameter[:rows], old_parameters[name]), name
        else:
            assert torch.equal(parameter, old_parameters[name]), name
    for name, buffer in new.named_buffers():
        assert torch.equal(buffer, new_buffers[name]), name  # never overwritten
    assert len(report.copied) == len(old_parameters) and not report.skipped


def test_a_parameter_whose_shape_changed_keeps_its_initialisation() -> None:
    torch.manual_seed(0)
    old = build_model("lightgcn", _graph(4, 5), None, [], embed_dim=8)
    new = build_model("lightgcn", _graph(4, 5), None, [], embed_dim=16)
    before = new.user_embedding.clone()
    ids = [str(i) for i in range(5)]
    report = copy_weights(new, old.state_dict(), old_user_ids=ids[:4], old_item_ids=ids,
                          new_user_ids=ids[:4], new_item_ids=ids)
    assert torch.equal(new.user_embedding, before)
    assert sorted(report.skipped) == ["item_embedding", "user_embedding"]
