"""Modality views of the LightGCN-backbone fusion models: the model's vectors and triple
margins with some modalities dropped, what CKD's teachers and counterfactual terms read
(:mod:`models.ckd`). A mixin of :class:`models.fusion_lightgcn.FusionLightGCN`, kept apart
because only CKD uses it; it reads the model's parts and adds none."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
import torch.nn.functional as F

from models.base import FixedScores, pair_margins


class FusionModalityViews:
    """View methods for :class:`models.fusion_lightgcn.FusionLightGCN` (listed before
    :class:`models.base.Recommender` among its bases, whose generic views they specialise)."""

    def view_state(self, keep: Collection[int]) -> dict[str, torch.Tensor]:
        """The view's conditioned features and the kNN part built from them (so a uni-modal
        view's kNN sees its modality alone)."""
        state = super().view_state(keep)
        if self.knn:
            state["knn_items"], state["knn_history"] = self._knn_part(state["conditioned"])
        return state

    def view_vectors(
        self, keeps: Sequence[Collection[int]], users: torch.Tensor, items: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Rows of ``forward()`` in each view. With ``beside`` the ID half reads no features,
        so it is propagated once for all views, and the content halves are built for the
        rows asked for only (as in training: for every user and item they cost most of a
        step)."""
        if self.combine != "beside":
            return super().view_vectors(keeps, users, items)
        id_users, id_items = self._id_propagation()
        is_new = self.new_mask[items].unsqueeze(1)
        views = []
        for keep in keeps:
            with self.modality_view(keep):
                fused = self.fused(self.conditioned)
                history = self.history_mean.user_mean(fused)[users]
                if self.knn:
                    history = torch.cat([history, self.knn_history[users]], dim=1)
                content = self._content_rows(fused, items)
                user_rows = torch.cat([self.user_content(history), id_users[users]], 1)
                item_rows = torch.cat([self.warm_content * content, id_items[items]], 1)
                item_rows = torch.where(
                    is_new, self.new_item_vectors(content, self.cold_scale, self._as_new(items)),
                    item_rows)
            views.append((user_rows, item_rows))
        return views

    def view_margins(
        self, keeps: Sequence[Collection[int]], users: torch.Tensor, first: torch.Tensor,
        second: torch.Tensor,
    ) -> list[torch.Tensor]:
        """Margins of triples in each view, equal to those of :meth:`view_vectors`, summed
        part by part (``beside``): the ID part once for every view; the kNN part (fixed
        buffers, a learned scalar in front) without autograd; only ``e_m`` gathered with
        gradients. CKD spends most of its step here, and the kNN part is the widest."""
        if self.combine != "beside":
            return super().view_margins(keeps, users, first, second)
        id_users, id_items = self._id_propagation()
        new_first = self.new_mask[first].unsqueeze(1)
        new_second = self.new_mask[second].unsqueeze(1)
        unknown = self.unknown_item / (self.num_layers + 1)
        new_ids = [unknown if self._as_new(rows) is None else unknown + self._as_new(rows)
                   for rows in (first, second)]
        shared = pair_margins(
            id_users[users],
            torch.where(new_first, self.cold_scale * new_ids[0], id_items[first]),
            torch.where(new_second, self.cold_scale * new_ids[1], id_items[second]))
        # the factor on an item's content half: w for trained items, the cold scale for new
        # ones (outside training their e_m also carries new_item_fused_weight)
        cold = self.cold_scale * (1.0 if self.training else self.new_item_fused_weight)
        fused_first = torch.where(new_first, cold, self.warm_content)
        fused_second = torch.where(new_second, cold, self.warm_content)
        # the kNN half carries the cold scale alone (no new_item_fused_weight)
        knn_factors = (torch.where(new_first.squeeze(1), self.cold_scale, self.warm_content),
                       torch.where(new_second.squeeze(1), self.cold_scale, self.warm_content))
        margins = []
        for keep in keeps:
            with self.modality_view(keep):
                fused = self.fused(self.conditioned)
                user = self.history_mean.user_mean(fused)[users] @ self.user_content_map
                margin = shared + pair_margins(user, fused_first * fused[first],
                                               fused_second * fused[second])
                if self.knn:
                    margin = margin + self._knn_margins(keep, users, first, second,
                                                        knn_factors)
            margins.append(margin)
        return margins

    def _knn_margins(self, keep: Collection[int], users: torch.Tensor, first: torch.Tensor,
                     second: torch.Tensor, factors: tuple[torch.Tensor, torch.Tensor],
                     ) -> torch.Tensor:
        """The kNN part of the margins in the view of ``keep`` (in place): ``knn_scale *
        gamma`` times fixed scores (:class:`models.base.FixedScores`, built once per view),
        each weighted by its item's ``factors`` (the cold scale changes during training, so
        it stays outside the scores), without autograd."""
        with torch.no_grad():
            key = (frozenset(keep), str(self.knn_items.device))
            built = self.__dict__.setdefault("_knn_scores", {})
            if key not in built:
                built[key] = FixedScores(F.normalize(self.knn_history, dim=1),
                                         self.knn_items).prepared()
            scores = built[key]
            fixed = (factors[0] * scores.scores(users, first)
                     - factors[1] * scores.scores(users, second))
        return self.knn_scale * self.log_knn_weight.exp() * fixed
