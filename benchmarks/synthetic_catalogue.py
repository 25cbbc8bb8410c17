"""A synthetic catalogue in the MMRec layout, for cost measurements at sizes the shared data
sets do not have.

python benchmarks/synthetic_catalogue.py --out /tmp/synthetic-20k
    11,991 users, 20,820 items, about 57,000 training interactions (the shape of the catalogue
    in issue 20: TikTok's interactions spread over three times its items), two 128-d
    modalities; --users/--items/--interactions change the shape.

Items have a latent topic; each modality is a random projection of it plus noise, so content
carries signal; popularity is Zipf-like; a user's items are drawn by popularity times a
softmax of its affinity to their topics. Every interaction is labelled train, validation or
test at TikTok's rates (86.6% / 4.4% / 9.0%), every user keeping at least one training row.
Nothing here is a quality benchmark: it exists so that cost curves have a catalogue of the
right size. Written outside the repository (never commit data).

At millions of users the per-user loop is too slow: :func:`draw_interactions` draws the same
kind of catalogue vectorised (each draw from the user's topic or from all items, by
popularity) and :func:`grown_microlens` builds MicroLens-50K grown k times from it in memory,
for ``benchmarks/training_scale.py``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.data import Dataset

SPLIT_SHARES = (0.866, 0.044, 0.090)  # TikTok's train / validation / test rows
MICROLENS = (50_000, 19_220, 359_708)  # users, items, interactions of MicroLens-50K


def write_synthetic_catalogue(
    out: Path,
    num_users: int = 11_991,
    num_items: int = 20_820,
    interactions: int = 66_100,
    modality_dims: tuple[int, ...] = (128, 128),
    topics: int = 200,
    seed: int = 0,
) -> Path:
    """Write ``synthetic.inter`` and one ``m<k>_feat.npy`` per modality into ``out``."""
    rng = np.random.default_rng(seed)
    latent, _, item_latent, popularity = _item_side(rng, num_items, topics)
    counts = np.maximum(1, rng.lognormal(1.2, 0.9, num_users)).astype(np.int64)
    counts = np.maximum(1, np.round(counts * interactions / counts.sum())).astype(np.int64)
    rows = []
    for user in range(num_users):
        taste = latent[rng.integers(0, topics)] + 0.5 * rng.normal(size=16)
        logits = np.log(popularity) + 0.4 * item_latent @ taste
        weights = np.exp(logits - logits.max())
        count = min(int(counts[user]), num_items)
        items = rng.choice(num_items, size=count, replace=False, p=weights / weights.sum())
        labels = rng.choice(3, size=count, p=SPLIT_SHARES)
        labels[0] = 0
        rows.append(np.stack([np.full(count, user), items, labels], axis=1))
    table = np.concatenate(rows)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["userID\titemID\tx_label", *("\t".join(map(str, row)) for row in table.tolist())]
    (out / "synthetic.inter").write_text("\n".join(lines) + "\n")
    for index, features in enumerate(item_features(rng, item_latent, modality_dims, np.float16)):
        np.save(out / f"m{index}_feat.npy", features)
    return out


def _item_side(
    rng: np.random.Generator, num_items: int, topics: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(topic latents [T, 16], item topics [I], item latents [I, 16], popularity [I])``."""
    latent = rng.normal(size=(topics, 16))
    item_topic = rng.integers(0, topics, num_items)
    item_latent = latent[item_topic] + 0.3 * rng.normal(size=(num_items, 16))
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    popularity = popularity[rng.permutation(num_items)]
    return latent, item_topic, item_latent, popularity


def item_features(
    rng: np.random.Generator, item_latent: np.ndarray, modality_dims: tuple[int, ...],
    dtype: type[np.floating] = np.float32,
) -> list[np.ndarray]:
    """One [I, dim] matrix per modality: a random projection of the latent plus noise."""
    out = []
    for dim in modality_dims:
        projection = rng.normal(size=(16, dim))
        noise = rng.normal(size=(len(item_latent), dim))
        out.append((item_latent @ projection + 2.0 * noise).astype(dtype))
    return out


def draw_interactions(
    num_users: int,
    num_items: int,
    interactions: int,
    *,
    min_per_user: int = 5,
    topics: int = 200,
    topic_share: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """Vectorised draws for catalogues of millions of users (no per-user loop, no file).

    Every user has ``min_per_user`` interactions plus a geometric number more, so that the
    total is about ``interactions`` (MicroLens-50K: at least 5 a user, 7.2 on average). A draw
    comes with probability ``topic_share`` from the items of the user's one topic, weighted by
    popularity, else from all items by popularity; a user's repeated draws of one item count
    once. Returns ``(pairs [N, 2] grouped by user, in draw order; item latents [I, 16]; the
    generator)``: the caller draws the features from the same generator (:func:`item_features`).
    """
    rng = np.random.default_rng(seed)
    _, item_topic, item_latent, popularity = _item_side(rng, num_items, topics)
    extra = max(interactions / num_users - min_per_user, 0.0)
    counts = min_per_user + rng.geometric(1.0 / (1.0 + extra), num_users) - 1
    users = np.repeat(np.arange(num_users, dtype=np.int64), np.minimum(counts, num_items))
    cdf = np.cumsum(popularity)
    items = np.searchsorted(cdf, rng.random(len(users)) * cdf[-1]).clip(max=num_items - 1)
    order = np.argsort(item_topic, kind="stable")  # items grouped by topic
    cum = np.cumsum(popularity[order])
    starts = np.searchsorted(item_topic[order], np.arange(topics))
    ends = np.searchsorted(item_topic[order], np.arange(topics), side="right")
    below = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    topic = rng.integers(0, topics, num_users)[users]
    topical = np.flatnonzero((rng.random(len(users)) < topic_share) & (ends[topic] > starts[topic]))
    t = topic[topical]
    target = below[t] + rng.random(len(t)) * (cum[ends[t] - 1] - below[t])
    items[topical] = order[np.searchsorted(cum, target).clip(starts[t], ends[t] - 1)]
    _, first = np.unique(users * num_items + items, return_index=True)
    first.sort()
    return np.stack([users[first], items[first]], axis=1), item_latent, rng


def grown_microlens_shape(k: float) -> tuple[int, int]:
    """Users and items of MicroLens-50K grown ``k`` times (:func:`grown_microlens`)."""
    return round(MICROLENS[0] * k), round(MICROLENS[1] * math.sqrt(k))


def grown_microlens(k: float, seed: int = 0) -> Dataset:
    """MicroLens-50K grown ``k`` times, in memory: users and interactions ``k`` times (a
    user's activity stays MicroLens's: at least 5, about 7 on average), items ``sqrt(k)``
    times (catalogues grow slower than audiences: item degrees grow ``sqrt(k)`` times), one
    384-d ``text`` modality like MicroLens's MiniLM features, MicroLens's leave-one-out split
    (a user's last draw test, the one before validation; users left with fewer than 3 rows
    keep all in training), rows in draw order as their time."""
    from training.data import Dataset

    users, items = grown_microlens_shape(k)
    pairs, latent, rng = draw_interactions(users, items, round(MICROLENS[2] * k), seed=seed)
    last = np.flatnonzero(np.r_[pairs[1:, 0] != pairs[:-1, 0], True])
    held = last[np.diff(np.r_[-1, last]) >= 3]
    labels = np.zeros(len(pairs), dtype=np.int8)
    labels[held], labels[held - 1] = 2, 1
    train = pairs[labels == 0]
    return Dataset(name=f"x{k:g}", num_users=users, num_items=items, train=train,
                   valid=pairs[labels == 1], test=pairs[labels == 2],
                   features={"text": item_features(rng, latent, (384,))[0]},
                   train_time=np.arange(len(train), dtype=np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--users", type=int, default=11_991)
    parser.add_argument("--items", type=int, default=20_820)
    parser.add_argument("--interactions", type=int, default=66_100,
                        help="all rows; about 86.6%% of them train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = write_synthetic_catalogue(args.out, args.users, args.items, args.interactions,
                                     seed=args.seed)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
