"""The contract between every recommender and the trainer, the evaluator and the exporter.

A recommender is an ``nn.Module`` built once over the whole training graph and the item
features (both kept as buffers). It owns three things, so that the trainer and the exporter know
nothing model-specific (adding a model means one file and one registry entry):

* **its training loss** on a batch of ``(user, positive, negative)`` triples:
  :meth:`Recommender.training_losses` returns named terms that the trainer sums: the model's
  own (:meth:`Recommender.model_losses`, BPR by default; a model adds its auxiliary terms or
  replaces them, as CROSSAN's in-batch softmax does), then those of every loss plug-in attached
  with :meth:`Recommender.add_loss_plugin` (CKD's distillation, :mod:`models.ckd`).
  Regularisation (eq. 19's L2) stays the trainer's, see :meth:`Recommender.l2_penalty`.
* **its modality views** (models that read modality features): under
  :meth:`Recommender.modality_view` the same weights see every modality but the kept ones at
  a neutral value, the counterfactual uni-modal views of CKD.
* **its all-item scores**: ``forward()`` returns the final embeddings of *all* users and
  *all* items, and the score of (u, i) is their inner product. Evaluation and the bundle use
  exactly these vectors.
* **what it exports**: :meth:`Recommender.serving_towers` describes the item tower (raw
  features -> embedding, history state) and the user tower (history states -> embedding) as
  torch modules plus the per-item and per-user states they consume, or ``None`` when the model
  has no feature path (its bundle then serves stored embeddings only).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from models.losses import bpr_loss


class ModelConfig(BaseModel):
    """A model's hyperparameters, typed (one subclass beside each model class, like a Hugging
    Face config): an unknown name or a value of the wrong type fails naming the field.
    ``cold_items`` (items held out of training) is every model's."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    cold_items: Any = None


@dataclass(frozen=True)
class BipartiteGraph:
    """Training interactions as a user->item edge list (ids are dense 0-based ints)."""

    num_users: int
    num_items: int
    edge_index: torch.Tensor  # LongTensor [2, E]: row 0 user ids, row 1 item ids; oldest first
    # when the data knows the time (training.trainer.model_inputs), which sequential models read

    def to(self, device: torch.device | str) -> BipartiteGraph:
        return BipartiteGraph(self.num_users, self.num_items, self.edge_index.to(device))

    def item_degree(self) -> torch.Tensor:
        """Training interactions per item, long [I]."""
        return torch.bincount(self.edge_index[1].long().cpu(), minlength=self.num_items)


def item_mask(num_items: int, items: torch.Tensor | None) -> torch.Tensor:
    """Bool [num_items] marking ``items`` (e.g. the ``cold_items`` held out of training)."""
    mask = torch.zeros(num_items, dtype=torch.bool)
    if items is not None:
        items = torch.as_tensor(items, dtype=torch.long).cpu()
        if items.numel() and (items.min() < 0 or items.max() >= num_items):
            lo, hi = int(items.min()), int(items.max())
            raise ValueError(f"item ids must lie in [0, {num_items}), got ids from {lo} to {hi}")
        mask[items] = True
    return mask


LossPlugin = Callable[["Recommender", "TrainingBatch"], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class TrainingBatch:
    """One mini-batch of BPR triples (long tensors of equal length, on the model's device)."""

    users: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor

    @property
    def items(self) -> torch.Tensor:
        """Every item id the batch touches (positives then negatives)."""
        return torch.cat([self.positives, self.negatives])


@dataclass
class ServingTowers:
    """What a model exports for the service (names and shapes fixed by ``training.export``).

    ``item_tower(features [B, F]) -> (embedding [B, d], history_state [B, S])``: how the model
    embeds an item from its raw features alone (the path of a brand-new item).
    ``user_tower(history_state [B, H, S], history_mask [B, H], user_state [B, U0],
    user_known [B, 1]) -> embedding [B, d]``: a user from the states of its history items,
    starting from a known user's stored state or the learned unknown-user state.
    ``item_states`` [I, S] and ``user_states`` [U, U0] are those inputs for the trained items
    and users.
    """

    item_tower: nn.Module
    user_tower: nn.Module
    item_states: torch.Tensor
    user_states: torch.Tensor
    feature_dim: int
    max_history: int | None = None  # the user tower reads at most this many newest items


def pair_margins(users: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``<u, first> - <u, second>`` per row of aligned vectors [N, d] -> [N]."""
    return (users * (first - second)).sum(-1)


#: Fixed scores (a frozen teacher's, a model's kNN part in one view) keep their whole
#: user-by-item table when it takes at most this many bytes: a score is then one look-up
#: instead of two gathered rows (TikTok: 250 MB per table; MicroLens-50K's 3.8 GB does not).
SCORE_TABLE_BYTES = 512 * 2**20


def narrow_factors(users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(users', items')`` with ``users' @ items'.T == users @ items.T``, in the smallest
    basis that keeps every score: the row space of ``items`` (a uni-modal view's constant
    modality leaves about half of it unused), found by SVD."""
    _, singular, basis = torch.linalg.svd(items, full_matrices=False)
    tolerance = singular[0] * max(items.shape) * torch.finfo(singular.dtype).eps
    basis = basis[: int((singular > tolerance).sum())]  # [r, d], orthonormal rows
    # <u, i> = <u B^T, i B^T> for every item i in the row space of B
    return users @ basis.T, items @ basis.T


@dataclass(frozen=True)
class FixedScores:
    """Scores that training never changes, ``<users[u], items[i]>``; after :meth:`prepared`
    read from their table, or from vectors in their narrowest exact basis."""

    users: torch.Tensor  # [U, d]
    items: torch.Tensor  # [I, d]
    table: torch.Tensor | None = None  # [U, I]

    def prepared(self, max_bytes: int | None = None) -> FixedScores:
        """The same scores, quicker to read: the table where it fits in ``max_bytes``
        (default :data:`SCORE_TABLE_BYTES`), else :func:`narrow_factors` of the vectors."""
        limit = SCORE_TABLE_BYTES if max_bytes is None else max_bytes
        if len(self.users) * len(self.items) * self.users.element_size() <= limit:
            return replace(self, table=self.users @ self.items.T)
        return replace(self, **dict(zip(("users", "items"),
                                        narrow_factors(self.users, self.items), strict=True)))

    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Score per pair of ids [N]."""
        if self.table is not None:
            return self.table[users, items]
        return (self.users[users] * self.items[items]).sum(-1)

    def margins(self, users: torch.Tensor, first: torch.Tensor, second: torch.Tensor):
        """``score(u, first) - score(u, second)`` per triple of ids."""
        if self.table is not None:
            return self.table[users, first] - self.table[users, second]
        return pair_margins(self.users[users], self.items[first], self.items[second])


class Recommender(nn.Module):
    """Base class of every model: all-user and all-item embeddings from one forward pass."""

    #: True when the model reads item modality features (and so can embed a brand-new item).
    uses_features: bool = False

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """Return ``(user_embeddings [U, d], item_embeddings [I, d])``."""
        raise NotImplementedError

    @property
    def trainable(self) -> bool:
        """False for training-free baselines (MostPop, content kNN): the trainer skips epochs."""
        return any(p.requires_grad for p in self.parameters())

    def model_losses(self, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        """The model's own named loss terms on one batch. Default: BPR."""
        users, items = self()
        return {
            "bpr": bpr_loss(
                users[batch.users], items[batch.positives], items[batch.negatives]
            )
        }

    #: Callables ``plugin(model, batch) -> named terms`` added to every training loss.
    loss_plugins: tuple[LossPlugin, ...] = ()

    def add_loss_plugin(self, plugin: LossPlugin) -> None:
        """Attach training terms from outside the model (CKD), without touching the trainer.
        A plug-in is not a submodule: its tensors stay out of the state dict and checkpoint."""
        self.loss_plugins = (*self.loss_plugins, plugin)

    def training_losses(self, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        """Named loss terms on one batch, the model's own then its plug-ins'; the trainer
        minimises their sum."""
        self.__dict__["_step_memo"] = {}
        try:
            named = self.model_losses(batch)
            for plugin in self.loss_plugins:
                extra = plugin(self, batch)
                if clash := set(extra) & set(named):
                    raise ValueError(f"loss plug-in terms {sorted(clash)} are already named")
                named.update(extra)
        finally:
            self.__dict__["_step_memo"] = None
        return named

    def step_memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, computed once per :meth:`training_losses` call under ``key`` (work
        that the model's own loss and a plug-in share within one step, e.g. a propagation
        that reads no features); outside a training step, computed afresh every time."""
        memo = self.__dict__.get("_step_memo")
        if memo is None:
            return compute()
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    # ---- modality views (CKD) ---------------------------------------------------------

    #: Name of the buffer of item features [I, sum(modality_dims)] that forward() reads, in
    #: the order of ``modality_dims``; None: the model has no modality views.
    view_buffer: str | None = None
    modality_dims: Sequence[int] = ()

    @property
    def num_modalities(self) -> int:
        return len(self.modality_dims) if self.view_buffer is not None else 0

    def neutral_features(self, keep: Collection[int]) -> torch.Tensor:
        """The model's item features with every modality outside ``keep`` replaced by its
        mean over all items (the authors' neutral value: ``feats.mean(dim=0)``)."""
        if self.view_buffer is None:
            raise NotImplementedError(f"{type(self).__name__} reads no modality features")
        if not set(keep) <= set(range(self.num_modalities)):
            raise ValueError(f"keep must name modalities 0..{self.num_modalities - 1}, "
                             f"got {sorted(keep)}")
        # the features the model was built with, even while a view is in place
        source = self.__dict__.setdefault("_full_features", getattr(self, self.view_buffer))
        features = source.to(getattr(self, self.view_buffer).device, copy=True)
        start = 0
        for m, width in enumerate(self.modality_dims):
            if m not in keep:
                block = features[:, start : start + width]
                block[:] = block.mean(0, keepdim=True)
            start += width
        return features

    def view_state(self, keep: Collection[int]) -> dict[str, torch.Tensor]:
        """The buffers that make the view of ``keep``: the neutral features, and in a model
        with buffers derived from them at build time (a fixed kNN part) those too."""
        return {self.view_buffer: self.neutral_features(keep)}

    def _view_state(self, keep: Collection[int]) -> dict[str, torch.Tensor]:
        # the features are fixed, so each view's buffers are built once (per device)
        key = (frozenset(keep), str(getattr(self, self.view_buffer).device))
        cache = self.__dict__.setdefault("_view_states", {})
        if key not in cache:
            cache[key] = self.view_state(keep)
        return cache[key]

    def _put(self, buffers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Set ``buffers`` by name; returns the ones they replaced."""
        replaced = {name: getattr(self, name) for name in buffers}
        for name, tensor in buffers.items():
            setattr(self, name, tensor)
        return replaced

    def use_view(self, keep: Collection[int]) -> None:
        """Put the view of ``keep`` in place for good (a uni-modal teacher's whole run)."""
        self._put(self._view_state(keep))

    def view_vectors(
        self, keeps: Sequence[Collection[int]], users: torch.Tensor, items: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(user vectors [len(users), d], item vectors [len(items), d])`` of some rows of
        ``self()`` in each view of ``keeps``. A model whose views share work (an ID part that
        reads no features) or that can build only the rows asked for overrides this."""
        views = []
        for keep in keeps:
            with self.modality_view(keep):
                all_users, all_items = self()
            views.append((all_users[users], all_items[items]))
        return views

    def view_margins(
        self, keeps: Sequence[Collection[int]], users: torch.Tensor, first: torch.Tensor,
        second: torch.Tensor,
    ) -> list[torch.Tensor]:
        """Margins ``<u, first> - <u, second>`` of N triples of ids, one [N] tensor per view
        of ``keeps`` (what CKD reads). Default: each distinct row once through
        :meth:`view_vectors`; a model whose score splits into parts (an ID part the views
        share, a fixed part without weights) overrides this to skip the wide gathers."""
        user_ids, user_rows = torch.unique(users, return_inverse=True)
        item_ids, item_rows = torch.unique(torch.cat([first, second]), return_inverse=True)
        count = len(first)
        return [pair_margins(u[user_rows], i[item_rows[:count]], i[item_rows[count:]])
                for u, i in self.view_vectors(keeps, user_ids, item_ids)]

    @contextmanager
    def modality_view(self, keep: Collection[int]) -> Iterator[None]:
        """Inside, ``self()`` is the view that sees only the modalities in ``keep``."""
        saved = self._put(self._view_state(keep))
        try:
            yield
        finally:
            self._put(saved)

    # ---- scoring contexts (what a frozen teacher of this model keeps) -------------------

    def score_contexts(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Per pair (user, item), the row of :meth:`context_embeddings`' first tensor that
        scores the item for the user. Default: the user's own row (one vector per user); a
        model whose user depends on the item scored (a sequence read up to that item)
        overrides this."""
        return users

    def context_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(every scoring context's vector [C, d], item vectors [I, d])``: what reproduces
        the model's score of any pair, ``<contexts[score_contexts(u, i)], items[i]>``.
        Default: ``self()``."""
        return self()

    #: True when a user *is* its ordered history (a sequence model): its test user has always
    #: read the validation item, so both evaluation protocols give it the same vector.
    sequential_user: bool = False

    def user_embeddings_after(self, pairs: torch.Tensor) -> torch.Tensor | None:
        """User vectors [U, d] once ``pairs`` [N, 2] (user, item; oldest first) are appended to
        the users' histories, as the service embeds a user from its whole history (the user
        tower, or for a sequence model its encoder): the *as served* test users, who have
        also seen their validation item. None (the default): the model cannot take a user's
        new interactions without training (its stored vectors are served as they are)."""
        return None

    def begin_epoch(self) -> None:
        """Called by the trainer before every training epoch: work a model redoes once an
        epoch (a graph rebuilt from its current weights, a fresh draw of pruned edges).
        Default: nothing."""

    def embed_new_items(self, features: torch.Tensor) -> torch.Tensor:
        """Final embeddings [B, d] of items that have features [B, F] but no interactions.

        The item tower the service runs for ``POST /items``. Models without a feature path
        (``uses_features`` False) cannot do this and raise ``NotImplementedError``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} learns only ID embeddings and cannot embed a new item from "
            "its features; use a model with uses_features=True (e.g. metammf_lightgcn, vbpr)"
        )

    def diagnostics(self) -> dict[str, Any]:
        """Numbers worth logging about the trained model (recorded in the bundle manifest)."""
        return {}

    def serving_towers(self) -> ServingTowers | None:
        """The towers the service runs, or None (the bundle then holds embeddings only)."""
        return None

    #: Names of parameters indexed by user id / item id (their rows are regularised per batch).
    user_tables: tuple[str, ...] = ("user_embedding",)
    item_tables: tuple[str, ...] = ()

    def l2_penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The ``||Phi||^2`` of eq. 19, restricted to what one BPR batch touches.

        Decision: the paper's L2 over *all* parameters, applied at every step under Adam, moves
        every embedding row that is not in the batch towards zero at the full learning rate
        (Adam normalises the tiny gradient), which wipes out the many users with one or two
        interactions. So, as LightGCN and MMRec do, the rows of the batch's users and items are
        penalised (summed, divided by the number of triples) and every shared weight in full.
        ``users`` holds the batch's user ids, ``items`` its positive and negative item ids.
        """
        batch = max(len(users), 1)
        total = users.new_zeros((), dtype=torch.float32)
        for name, parameter in self.named_parameters():
            if name in self.user_tables:
                total = total + parameter[users].pow(2).sum() / batch
            elif name in self.item_tables:
                total = total + parameter[items].pow(2).sum() / batch
            else:
                total = total + parameter.pow(2).sum()
        return total
