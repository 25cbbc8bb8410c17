"""Which path ranks new items best: the content kNN, or the content neighbours' IDs?

python benchmarks/new_item_paths.py --data tiktok --config configs/tiktok_serving.json \
    --cold-start-fold 0 --threads 1

Trains one model of the configuration (a LightGCN-backbone model with a content-kNN part),
then ranks the items without training interactions among themselves (Recall@20 of their
validation and test rows, the report's *cold among cold*) by:

* ``knn``: the model's content half as served for new items (the kNN part with
  ``new_item_fused_weight`` 0): what the product ranks them by today;
* ``neighbour IDs, k``: the user's ID half against the mean ID embedding of the item's ``k``
  nearest content neighbours among the trained items (what the item graph, FREEDOM's frozen
  content graph, gives a new item: ``models.item_graph``), with equal modality weights;
* ``knn + lambda * neighbour IDs``: both, the second weighted;
* ``neighbour popularity, k``: the mean training count of those neighbours (no user at all).

With ``--cold-start-fold`` the items of that fold (10%) are held out of training, the
protocol where new items carry 16% of TikTok's test rows. Writes the table to
``benchmarks/results/new_item_paths_<data>[_fold<f>].md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.item_graph import mean_graph, modality_blocks, neighbour_rows  # noqa: E402
from training.config import TrainConfig, load_config_file  # noqa: E402
from training.evaluation import evaluate  # noqa: E402
from training.pipeline import prepare_dataset  # noqa: E402
from training.report import new_items, split_matrices  # noqa: E402
from training.trainer import train  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
NEIGHBOURS = (10, 20, 50)
WEIGHTS = (0.25, 0.5, 1.0, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="tiktok")
    parser.add_argument("--config", default="configs/tiktok_serving.json")
    parser.add_argument("--cold-start-fold", type=int, help="hold out this 10% fold of items")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fields = {**load_config_file(args.config), "seed": args.seed, "refit": None}
    if args.cold_start_fold is not None:
        fields.update(cold_start_fraction=0.1, cold_start_fold=args.cold_start_fold)
    config = TrainConfig(**fields)
    dataset = prepare_dataset(args.data, config)
    model = train(dataset, config, progress=False).model.eval()
    with torch.no_grad():
        users, items = model()
        cold = torch.as_tensor(new_items(dataset))
        warm_ids, cold_ids = torch.nonzero(~cold)[:, 0], torch.nonzero(cold)[:, 0]
        width = model.content_width
        user_ids, user_content = users[:, width:], users[:, :width]
        new_content = items[cold_ids, :width]
        ids = model.item_id_embedding
        popularity = torch.as_tensor(np.bincount(dataset.train[:, 1],
                                                 minlength=dataset.num_items)).float()
        keys = modality_blocks(model.conditioned, model.modality_dims)
        weights = [1.0 / len(keys)] * len(keys)
        columns = {}
        for k in NEIGHBOURS:
            graph = mean_graph([neighbour_rows(key, k, warm_ids)[1] for key in keys], weights,
                               dataset.num_items)
            columns[k] = (graph(ids)[cold_ids], graph(popularity.unsqueeze(1))[cold_ids])
        rows: dict[str, dict[str, float]] = {}
        for split in ("valid", "test"):
            relevant, seen = split_matrices(dataset, split)
            relevant = relevant[:, cold_ids.numpy()]
            seen = seen[:, cold_ids.numpy()]

            def score(user: torch.Tensor, item: torch.Tensor, relevant=relevant,
                      seen=seen) -> float:
                return evaluate(user, item, relevant, seen, ks=(20,))["recall@20"]

            rows.setdefault("knn (served)", {})[split] = score(user_content, new_content)
            for k, (neighbour_ids, neighbour_pop) in columns.items():
                rows.setdefault(f"neighbour IDs, k={k}", {})[split] = score(user_ids,
                                                                             neighbour_ids)
                rows.setdefault(f"neighbour popularity, k={k}", {})[split] = score(
                    torch.ones(len(users), 1), neighbour_pop)
                for lam in WEIGHTS:
                    rows.setdefault(f"knn + {lam} x neighbour IDs, k={k}", {})[split] = score(
                        torch.cat([user_content, lam * user_ids], 1),
                        torch.cat([new_content, neighbour_ids], 1))
    rows_of = {split: int(split_matrices(dataset, split)[0][:, cold_ids.numpy()].nnz)
               for split in ("valid", "test")}
    fold = "" if args.cold_start_fold is None else f"_fold{args.cold_start_fold}"
    lines = [
        f"# Ranking new items among themselves on {Path(args.data).name}{fold}",
        "",
        "```",
        shlex.join(["python", *sys.argv]),
        "```",
        "",
        f"One model ({config.model}, seed {args.seed}); {len(cold_ids)} items without training "
        f"interactions, {rows_of['valid']} validation and {rows_of['test']} test rows on them. "
        "Recall@20 of those rows, only those items ranked.",
        "",
        "| path | valid | test |",
        "| --- | --- | --- |",
        *(f"| {name} | {values['valid']:.4f} | {values['test']:.4f} |"
          for name, values in rows.items()),
        "",
    ]
    text = "\n".join(lines)
    out = Path(args.out or RESULTS / f"new_item_paths_{Path(args.data).name}{fold}.md")
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
