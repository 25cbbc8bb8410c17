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
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SPLIT_SHARES = (0.866, 0.044, 0.090)  # TikTok's train / validation / test rows


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
    latent = rng.normal(size=(topics, 16))
    item_topic = rng.integers(0, topics, num_items)
    item_latent = latent[item_topic] + 0.3 * rng.normal(size=(num_items, 16))
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    popularity = popularity[rng.permutation(num_items)]
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
    for index, dim in enumerate(modality_dims):
        projection = rng.normal(size=(16, dim))
        features = item_latent @ projection + 2.0 * rng.normal(size=(num_items, dim))
        np.save(out / f"m{index}_feat.npy", features.astype(np.float16))
    return out


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
