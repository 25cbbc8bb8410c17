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

    def _loo(self, batch: TrainingBatch, means: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """Rows of ``means`` [B, w] (each batch user's history mean) without the batch's
        positive, whose rows are ``own`` [B, w] (see :meth:`_leave_one_out`)."""
        count = self.user_degree[batch.users].unsqueeze(1)
        total = self.history_mean.totals[batch.users].unsqueeze(1)
        weight = self.history_mean.weights_of(batch.users, batch.positives).unsqueeze(1)
        others = (means * total - weight * own) / (total - weight).clamp(min=1e-12)
        return torch.where(count > 1.0, others, torch.zeros_like(others))

    def _part_losses(self, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        """:meth:`vector_losses` for ``beside``, its scores summed part by part (fused content,
        kNN, IDs) instead of as whole vectors: the kNN part is fixed but for its weight, so its
        dot products need no autograd, and no wide row is assembled, selected and multiplied
        twice (as a warm item and as a new one). The same losses (tested to float rounding),
        about a third of a MicroLens-sized step less."""
        fused = self.fused(self.conditioned)
        id_users, id_items = self._id_propagation()
        user_fused = self._loo(batch, self.history_mean.user_mean(fused)[batch.users],
                               fused[batch.positives]) @ self.user_content_map
        user_id = id_users[batch.users]
        knn_weight = None
        if self.knn:
            knn_weight = self.knn_scale * self.log_knn_weight.exp()
            with torch.no_grad():
                user_knn = F.normalize(self._loo(batch, self.knn_history[batch.users],
                                                 self.knn_items[batch.positives]), dim=1)
        unknown = (self.unknown_item / (self.num_layers + 1)).expand_as(user_id)

        def scores(items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(as a warm item, as a new item) of each row's item."""
            content = (user_fused * fused[items]).sum(1)
            if knn_weight is not None:
                with torch.no_grad():
                    knn = (user_knn * self.knn_items[items]).sum(1)
                content = content + knn_weight * knn
            new_id = unknown if self._as_new(items) is None else unknown + self._as_new(items)
            return (self.warm_content * content + (user_id * id_items[items]).sum(1),
                    content + (user_id * new_id).sum(1))

        (warm_pos, new_pos), (warm_neg, new_neg) = scores(batch.positives), scores(batch.negatives)
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
