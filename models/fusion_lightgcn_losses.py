"""The training losses of the LightGCN-backbone fusion models: BPR over whole vectors
(``propagate``, and the oracle) and the same BPR summed part by part (``beside``), with each
batch user's content mean leaving its positive out. A mixin of
:class:`models.fusion_lightgcn.FusionLightGCN`. Two terms make the new-item path trained:

* ``new_item_weight`` (beta): an auxiliary BPR loss on the same triples with *both* items
  replaced by their feature-only vectors (the unknown ID half cancels in the margin: it trains
  the content path to rank items the way the user's history says);
* ``new_item_dropout``: in the main BPR loss that share of positives and of negatives is scored
  with the feature-only vector, so the unknown vector learns where a new item stands against
  warm ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.base import TrainingBatch
from models.graph import lightgcn_propagate
from models.losses import bpr_loss


class FusionLosses:
    """Loss methods of :class:`models.fusion_lightgcn.FusionLightGCN`."""

    def _content_rows(self, fused: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The content half of some items (:meth:`content` of theirs), from all items' ``e_m``."""
        if not self.knn:
            return fused[rows]
        return torch.cat([fused[rows], self.knn_items[rows]], dim=1)

    def _leave_one_out(self, fused: torch.Tensor, batch: TrainingBatch) -> torch.Tensor:
        """Mean content [B, w] of each batch user's history *without* the batch's positive.

        Without this the content half learns to recognise the positive *in* the user's own
        history (a user with one training item has exactly that item as its mean), which
        evaluation, where history items are masked, never rewards: it collapses in 1-2 epochs.
        """
        mean = self.history_mean.user_mean(fused)[batch.users]
        if self.knn:
            mean = torch.cat([mean, self.knn_history[batch.users]], dim=1)
        # weighted by recency (history_decay): the positive's own weight comes out of the sum
        return self._loo(batch, mean, self._content_rows(fused, batch.positives))

    def _batch_vectors(
        self, batch: TrainingBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(users, positives, negatives, positive content, negative content)`` of a batch.

        The IDs are propagated over the whole graph, but the content halves (and with
        ``knn_weight`` their wide kNN part) are assembled for the batch's rows only: building
        them for every user and item each step cost ~90% of a step on MicroLens-50K.
        """
        fused = self.fused(self.conditioned)
        if self.combine == "beside":  # the IDs alone: CKD's views share them in the step
            users, items = self._id_propagation()
        else:
            users, items = lightgcn_propagate(
                self._users0(), self._items0(fused), self._adjacency(), self.num_layers
            )
        positive_content = self._content_rows(fused, batch.positives)
        negative_content = self._content_rows(fused, batch.negatives)
        user, positive, negative = users[batch.users], items[batch.positives], items[
            batch.negatives]
        if self.combine == "beside":  # the content halves go in front of the IDs
            user = torch.cat([self.user_content(self._leave_one_out(fused, batch)), user], 1)
            positive = torch.cat([self.warm_content * positive_content, positive], 1)
            negative = torch.cat([self.warm_content * negative_content, negative], 1)
        return user, positive, negative, positive_content, negative_content

    def model_losses(self, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        if self.combine == "beside":
            return self._part_losses(batch)
        return self.vector_losses(batch)

    def _loo_parts(
        self, batch: TrainingBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(user has other items, history total, the positive's weight)`` [B, 1] of each
        triple: what :meth:`_loo` needs to take the positive out of a user's mean."""
        count = self.user_degree[batch.users].unsqueeze(1)
        total = self.history_mean.totals[batch.users].unsqueeze(1)
        weight = self.history_mean.weights_of(batch.users, batch.positives).unsqueeze(1)
        return count > 1.0, total, weight

    def _loo(self, batch: TrainingBatch, means: torch.Tensor, own: torch.Tensor,
             parts: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
             ) -> torch.Tensor:
        """Rows of ``means`` [B, w] (each batch user's history mean) without the batch's
        positive, whose rows are ``own`` [B, w] (see :meth:`_leave_one_out`); ``parts``:
        :meth:`_loo_parts`, when the step has them already."""
        keep, total, weight = parts if parts is not None else self._loo_parts(batch)
        others = (means * total - weight * own) / (total - weight).clamp(min=1e-12)
        return torch.where(keep, others, torch.zeros_like(others))

    def _step_content(
        self, batch: TrainingBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(history mean of e_m [B, d_m], e_m of the positives, of the negatives)``: the rows
        of ``history_mean.user_mean(fused(conditioned))`` and ``fused(conditioned)`` that a
        step reads, with the fusion run on the items it reads only (its positives, negatives
        and its users' histories: ~60% of MicroLens-50K's catalogue, ~87% of TikTok's; the
        others are zero rows that nothing read depends on). The same values and gradients as
        the whole tables (tested)."""
        users, inverse = torch.unique(batch.users, return_inverse=True)
        row, item, share = self.history_mean.history_rows(users)
        read = torch.zeros(self.num_items, dtype=torch.bool, device=item.device)
        for ids in (item, batch.positives, batch.negatives):
            read[ids] = True
        rows = read.nonzero().squeeze(1)
        fused = self.fused(self.conditioned.index_select(0, rows))
        table = fused.new_zeros(self.num_items, fused.shape[1]).index_copy(0, rows, fused)
        # The batch users' means from their own entries where those are few (a tenth of
        # MicroLens-50K's edges), else the CSR product over all users (TikTok's batches hold
        # ~3/4 of its edges): per entry, a gather and scatter costs ~3x the CSR product's.
        if 3 * len(item) < self.history_mean.users_from_items.col.numel():
            entries = table.index_select(0, item) * share.unsqueeze(1)
            mean = table.new_zeros(len(users), table.shape[1]).index_add(0, row, entries)
            mean = mean.index_select(0, inverse)
        else:
            mean = self.history_mean.user_mean(table).index_select(0, batch.users)
        return (mean, table.index_select(0, batch.positives),
                table.index_select(0, batch.negatives))

    @torch.no_grad()
    def _knn_loo_scores(
        self, batch: TrainingBatch, parts: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed kNN scores [B] of the positives and the negatives: the cosine of each
        item's unit features ``x`` with the user's kNN profile, the mean ``h`` of its history's
        (positive ``p`` left out, :meth:`_loo`). Written out from five dot products,
        ``(T h.x - w p.x) / |T h - w p|``, instead of building the 256-wide profile rows
        (that cost ~20% of a TikTok step); equal to float rounding (tested)."""
        keep, total, weight = (part.squeeze(1) for part in parts)
        history = self.knn_history.index_select(0, batch.users)
        positive = self.knn_items.index_select(0, batch.positives)
        negative = self.knn_items.index_select(0, batch.negatives)
        dot = torch.linalg.vecdot
        hp, hn, pn = dot(history, positive), dot(history, negative), dot(positive, negative)
        hh, pp = dot(history, history), dot(positive, positive)
        scale = (total - weight).clamp(min=1e-12)  # the loo mean is (T h - w p) / scale
        squared = total * total * hh - 2.0 * total * weight * hp + weight * weight * pp
        norm = (squared.clamp(min=0.0).sqrt() / scale).clamp(min=1e-12)  # F.normalize's eps

        def cosine(hx: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
            return torch.where(keep, (total * hx - weight * px) / scale / norm, 0.0)

        return cosine(hp, pp), cosine(hn, pn)

    def _part_losses(self, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        """:meth:`vector_losses` for ``beside``, its scores summed part by part (fused content,
        kNN, IDs) instead of as whole vectors: the kNN part is fixed but for its weight, so its
        dot products need no autograd, and no wide row is assembled, selected and multiplied
        twice (as a warm item and as a new one). The same losses (tested to float rounding),
        about a third of a MicroLens-sized step less. The content reads only the rows the
        step needs (:meth:`_step_content`, :meth:`_knn_loo_scores`)."""
        user_mean, fused_positive, fused_negative = self._step_content(batch)
        id_users, id_items = self._id_propagation()
        parts = self._loo_parts(batch)
        user_fused = self._loo(batch, user_mean, fused_positive, parts) @ self.user_content_map
        user_id = id_users.index_select(0, batch.users)
        knn_pos = knn_neg = None
        if self.knn:
            knn_weight = self.knn_scale * self.log_knn_weight.exp()
            knn_pos, knn_neg = (knn_weight * part for part in self._knn_loo_scores(batch, parts))
        unknown = self.unknown_item / (self.num_layers + 1)
        dot = torch.linalg.vecdot

        def scores(items: torch.Tensor, fused: torch.Tensor, knn: torch.Tensor | None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
            """(as a warm item, as a new item) of each row's item."""
            content = dot(user_fused, fused)
            if knn is not None:
                content = content + knn
            as_new = self._as_new(items)
            new_id = user_id @ unknown if as_new is None else dot(user_id, unknown + as_new)
            return (self.warm_content * content
                    + dot(user_id, id_items.index_select(0, items)), content + new_id)

        warm_pos, new_pos = scores(batch.positives, fused_positive, knn_pos)
        warm_neg, new_neg = scores(batch.negatives, fused_negative, knn_neg)
        # items new in training (zero degree) are always scored as new items
        is_new_pos, is_new_neg = self.new_mask[batch.positives], self.new_mask[batch.negatives]
        if self.new_item_dropout > 0.0:
            is_new_pos = is_new_pos | (torch.rand_like(warm_pos) < self.new_item_dropout)
            is_new_neg = is_new_neg | (torch.rand_like(warm_neg) < self.new_item_dropout)
        margin = (torch.where(is_new_pos, new_pos, warm_pos)
                  - torch.where(is_new_neg, new_neg, warm_neg))
        losses = {"bpr": F.softplus(-margin).mean()}
        if self.new_item_weight > 0.0:
            losses["new_item_bpr"] = self.new_item_weight * F.softplus(-(new_pos - new_neg)).mean()
        return losses

    def vector_losses(self, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        """BPR (and the new-item BPR) of whole user and item vectors: the loss of ``propagate``
        and the oracle of :meth:`_part_losses`."""
        user, positive, negative, positive_content, negative_content = self._batch_vectors(batch)
        new_positive = self.new_item_vectors(positive_content,
                                             neighbours=self._as_new(batch.positives))
        new_negative = self.new_item_vectors(negative_content,
                                             neighbours=self._as_new(batch.negatives))
        # Items that are new in training (zero degree) are always scored as new items.
        is_new_pos = self.new_mask[batch.positives].unsqueeze(1)
        is_new_neg = self.new_mask[batch.negatives].unsqueeze(1)
        if self.new_item_dropout > 0.0:
            is_new_pos = is_new_pos | (torch.rand_like(positive[:, :1]) < self.new_item_dropout)
            is_new_neg = is_new_neg | (torch.rand_like(negative[:, :1]) < self.new_item_dropout)
        losses = {
            "bpr": bpr_loss(
                user,
                torch.where(is_new_pos, new_positive, positive),
                torch.where(is_new_neg, new_negative, negative),
            )
        }
        if self.new_item_weight > 0.0:
            losses["new_item_bpr"] = self.new_item_weight * bpr_loss(
                user, new_positive, new_negative
            )
        return losses
