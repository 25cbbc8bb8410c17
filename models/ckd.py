"""CKD: counterfactual knowledge distillation for modality-balanced training (Zhang et al.,
"Modality-Balanced Learning for Multimedia Recommendation"), as a loss plug-in.

:class:`CounterfactualDistillation` is attached to a multimodal model with
:meth:`models.base.Recommender.add_loss_plugin`; on every batch it adds two terms to the
model's own loss, read off the model's counterfactual uni-modal views
(:meth:`~models.base.Recommender.modality_view`: every other modality at its mean):

* **specific** (on the batch's BPR triples ``(u, i+, j-)``): ``max(0, t_m - s_m)``, the hinge
  that pulls the student's uni-modal margin ``s_m = <u, i+> - <u, j->`` of view m up to
  teacher m's margin ``t_m``;
* **generic** (on ``generic_triples`` triples of a random user with training data and two
  items drawn uniformly from all items): the cross-entropy between the teacher's and the
  student's preference probabilities ``sigmoid(margin / temperature)``;
* **re-weighting**: per triple, modality m's effect on the joint margin against its
  uni-modal margin, ``c_m = clamp((joint - margin without m) / margin of m alone, 1e-8, 10)``
  (detached), and weights ``w_m = M (1 / c_m) / sum_k (1 / c_k)``, which sum to the number of
  modalities M and favour the modality whose uni-modal knowledge the joint model uses least.

Total: ``weight * mean over triples of sum_m w_m (specific_m + beta * generic_m)``.

``batch_triples`` (ours, off by default) distils on a random subset of the batch's triples: an
unbiased estimate of the same mean, for a model whose views cost a whole forward pass each
(CROSSAN: each view runs the item towers and the sequence encoder again).

Cost: the plug-in reads only margins, from :meth:`~models.base.Recommender.view_margins` in one
call for every view (a model that splits its score into parts shares the ID part between views
and skips autograd on fixed parts), and a teacher's margins from its score table where that
fits (:meth:`~models.base.FixedScores.prepared`).

Checked against the authors' code (CRIPAC-DIG/Balanced-Multimodal-Rec, ``codes/train_kd.py``):
the hinge, the 5,000 generic triples per step drawn as above, the temperature inside both
sigmoids, the generic term (a batch mean) added to each triple's hinge before the weights,
the defaults ``kd_ratio`` 0.01 (``weight``), ``kl`` 5 (``beta``), ``pred_temp`` 0.1. Their
re-weighting is written for two modalities, ``ratio_t = 1 - (c_t - c_v) / (c_t + c_v)``,
which is ``2 c_v / (c_t + c_v)``; the formula above is the same for M = 2 and its natural
extension beyond (the "without m" view keeps every modality but m; for two modalities it is
the other one's view, so no extra forward pass). Decisions of ours, where the code is silent
or fragile: a triple whose ``c_m`` is undefined (0 / 0) counts as 1; the cross-entropy is
computed from logits (their ``log(p + 1e-8)`` differs by at most the epsilon); the ablation
without teachers (``teachers=False``) trains each view on the labels instead (its BPR loss,
re-weighted the same way; no generic term, which needs a teacher).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from models.base import FixedScores, Recommender, TrainingBatch


class TeacherScores(FixedScores):
    """A frozen uni-modal teacher's final embeddings (its scores are inner products): its
    scoring contexts (:meth:`~models.base.Recommender.context_embeddings`: its users, for a
    model with one vector per user) and items; CKD reads them
    :meth:`~models.base.FixedScores.prepared`, at the rows the student's
    :meth:`~models.base.Recommender.score_contexts` names."""


def balance_weights(joint: torch.Tensor, alone: torch.Tensor, without: torch.Tensor):
    """Per-triple modality weights [B, M] from margins: ``joint`` [B], ``alone`` [B, M] (view
    of m alone), ``without`` [B, M] (view of all but m); each row sums to M."""
    effect = ((joint.unsqueeze(1) - without) / alone).nan_to_num(nan=1.0)
    inverse = 1.0 / effect.clamp(1e-8, 10.0)
    return alone.shape[1] * inverse / inverse.sum(1, keepdim=True)


@dataclass
class CounterfactualDistillation:
    """The CKD loss plug-in (see the module docstring); ``teachers`` in modality order."""

    teachers: list[TeacherScores] | None
    generic_users: torch.Tensor  # ids of users with training interactions
    num_items: int
    weight: float = 0.01
    beta: float = 5.0
    temperature: float = 0.1
    generic_triples: int = 5000
    #: distil on at most this many of the batch's triples a step, drawn at random (None: all)
    batch_triples: int | None = None
    specific: bool = True
    generic: bool = True
    reweight: bool = True
    seed: int = 0
    #: running sums of the weights per modality and of the steps (for the run's diagnostics)
    weight_sums: torch.Tensor | None = field(default=None, repr=False)
    steps: int = 0

    def __post_init__(self) -> None:
        if self.teachers is None and self.generic:
            raise ValueError("the generic term needs teachers (set generic=False without them)")
        if not (self.specific or self.generic):
            raise ValueError("CKD without specific and generic terms adds nothing")
        self._generator = torch.Generator().manual_seed(self.seed)

    def _generic_batch(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        pool = self.generic_users
        count = self.generic_triples
        if count <= len(pool):  # distinct users, as the authors' rd.sample
            users = pool[torch.randperm(len(pool), generator=self._generator)[:count]]
        else:
            users = pool[torch.randint(len(pool), (count,), generator=self._generator)]
        items = torch.randint(self.num_items, (2, count), generator=self._generator)
        return users.to(device), items[0].to(device), items[1].to(device)

    def __call__(self, model: Recommender, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        count = model.num_modalities
        if count < 2:
            raise ValueError(f"CKD needs a model with at least two modality views; "
                             f"{type(model).__name__} has {count}")
        if self.teachers is not None and len(self.teachers) != count:
            raise ValueError(f"{len(self.teachers)} teachers for {count} modalities")
        if self.batch_triples is not None and self.batch_triples < len(batch.users):
            chosen = torch.randperm(len(batch.users), generator=self._generator)
            chosen = chosen[: self.batch_triples].to(batch.users.device)
            batch = TrainingBatch(batch.users[chosen], batch.positives[chosen],
                                  batch.negatives[chosen])
        size = len(batch.users)
        generic = self._generic_batch(batch.users.device) if self.generic else None
        # the triples every view is needed on: the batch's, then the generic ones
        triples = (batch.users, batch.positives, batch.negatives)
        if generic is not None:
            triples = tuple(torch.cat(pair) for pair in zip(triples, generic, strict=True))
        # the uni-modal views on every triple; for the weights (no gradient, the batch's
        # triples only) the joint model and, beyond two modalities, each view without one
        # modality (a model shares the work its views have in common within the step)
        margins = model.view_margins([{m} for m in range(count)], *triples)
        alone = torch.stack([margin[:size] for margin in margins], 1)  # [B, M]
        if self.reweight:
            every = set(range(count))
            keeps = [every] + ([every - {m} for m in range(count)] if count > 2 else [])
            with torch.no_grad():
                joint, *rest = model.view_margins(
                    keeps, batch.users, batch.positives, batch.negatives)
                without = alone.flip(1) if count == 2 else torch.stack(rest, 1)
                weights = balance_weights(joint, alone.detach(), without.detach())
        else:
            weights = torch.ones_like(alone)
        self._record(weights)
        terms: dict[str, torch.Tensor] = {}
        if self.specific:
            if self.teachers is None:  # ablation: each view learns from the labels (BPR)
                per_view = F.softplus(-alone)
            else:
                contexts = model.score_contexts(batch.users, batch.positives)
                taught = torch.stack([t.margins(contexts, batch.positives, batch.negatives)
                                      for t in self.teachers], 1)
                per_view = (taught - alone).clamp_min(0.0)
            terms["ckd_specific"] = self.weight * (weights * per_view).sum(1).mean()
        if generic is not None:
            contexts = model.score_contexts(generic[0], generic[1])
            losses = torch.stack([
                F.binary_cross_entropy_with_logits(
                    student[size:] / self.temperature,
                    torch.sigmoid(teacher.margins(contexts, *generic[1:]) / self.temperature))
                for student, teacher in zip(margins[:count], self.teachers, strict=True)])
            terms["ckd_generic"] = self.weight * self.beta * (weights.mean(0) * losses).sum()
        return terms

    def _record(self, weights: torch.Tensor) -> None:
        mean = weights.detach().mean(0).cpu()
        self.weight_sums = mean if self.weight_sums is None else self.weight_sums + mean
        self.steps += 1

    def mean_weights(self) -> list[float]:
        """The modality weights averaged over every step so far (1 each without steps)."""
        if self.weight_sums is None:
            return []
        return (self.weight_sums / self.steps).tolist()
