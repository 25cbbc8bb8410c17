"""The served bundle's protocol: configurations refit on training + validation, test once.

python benchmarks/refit.py --data tiktok \
    --configs configs/tiktok_serving.json,configs/tiktok_lightgcn_refit.json --seeds 3

Each config file carries a ``refit`` (:class:`training.config.RefitConfig`: the epochs and the
serving rules chosen on validation, as ``python -m training select`` writes it), so every run
trains on training + validation for that fixed budget and only the test split is held out:
the bundle a user of ``run.sh`` serves. Items without training interactions are fewer here
than under the validation protocol (validation rows make some of them warm), so the cold
rows are not those of the seed runs' tables. Writes
``benchmarks/results/refit_<data>.md``: test Recall@20 (all, warm, cold rows, cold among
cold), mean ± std over the seeds.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import TrainConfig, load_config_file  # noqa: E402
from training.pipeline import prepare_dataset  # noqa: E402
from training.trainer import train  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
PARTS = ("all", "warm", "cold", "cold_among_cold")
SEEDS_FROM = 2024


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {spread:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="tiktok")
    parser.add_argument("--configs", required=True, help="comma-separated config files")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="default benchmarks/results/refit_<data>.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for path in args.configs.split(","):
        setting = load_config_file(path)
        if not setting.get("refit"):
            raise SystemExit(f"{path}: no refit section (see training.config.RefitConfig)")
        scores: dict[str, list[float]] = {part: [] for part in PARTS}
        dataset = None
        for seed in range(SEEDS_FROM, SEEDS_FROM + args.seeds):
            config = TrainConfig(**{**setting, "seed": seed})
            dataset = dataset or prepare_dataset(args.data, config)
            result = train(dataset, config, progress=False)
            for part in PARTS:
                value = result.test_report.get(part, {}).get("recall@20")
                if value is not None:
                    scores[part].append(value)
            print(f"{path} seed {seed}: test R@20 {result.test_report['all']['recall@20']:.4f}",
                  flush=True)
        rows.append(f"| {setting['model']} (`{path}`) | {args.seeds} | "
                    f"{setting['refit'].get('epochs')} | "
                    + " | ".join(_cell(scores[part]) for part in PARTS) + " |")
    lines = [
        f"# Refit on training + validation, test Recall@20 on {args.data}",
        "",
        "```",
        shlex.join(["python", *sys.argv]),
        "```",
        "",
        f"{args.threads} torch threads; seeds from {SEEDS_FROM}; mean ± std (ddof 1). Cold rows: "
        "test rows on items without training or validation interactions (fewer than under the "
        "validation protocol), ranked among all items; *cold among cold* among those items only.",
        "",
        "| config | seeds | epochs | R@20 all | R@20 warm | R@20 cold | R@20 cold among cold |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out) if args.out else RESULTS / f"refit_{Path(args.data).name}.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
