"""The text tower of a CROSSAN bundle: items/s of POST /items' text path, parity and quality.

    python benchmarks/text_tower.py speed --bundle bundles/sequential/crossan-2024 --threads 2
    python benchmarks/text_tower.py quality --bundle bundles/sequential/crossan-2024

``speed`` times the service's own :class:`service.towers.TextTower` (tokenising included) on
the first ``--items`` MicroLens titles in requests of ``--batch`` texts, for the float32 tower
and its dynamic-int8 twins (per-channel scales, as exported, and per-tensor ones), each with
length-sorted chunks (the service's default, 16 texts) and without (one chunk of the whole
batch, padded to its longest field); and the parity of each int8 tower with float32 on those
titles (largest difference relative to the largest float32 value, smallest cosine).
``quality`` embeds every item's title through each tower, puts the states it computed in the
bundle's model in place of the cached ones and ranks the test split as training does (HR and
NDCG at 10, the test user having seen its validation item): the quality a bundle would have if
every item had come in through POST /items. Both merge into
``benchmarks/results/text_tower.json`` and rewrite ``benchmarks/results/text_tower.md``; run
``speed`` on quiet cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bundle as bundle_format  # noqa: E402
from service.towers import TextTower  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RECORD = RESULTS / "text_tower.json"
def tower_files(bundle_dir: Path, folder: Path) -> dict[str, Path]:
    """float32 and the shipped int8 tower (per-channel scales), and per-tensor int8 made here
    from the float32 one for comparison."""
    from training.export import quantize_text_tower

    per_tensor = folder / "int8_per_tensor.onnx"
    fp32 = bundle_dir / bundle_format.TEXT_TOWER
    per_tensor.write_bytes(quantize_text_tower(fp32.read_bytes(), per_channel=False))
    return {"fp32": fp32, "int8 (shipped, per-channel)": bundle_dir / bundle_format.TEXT_TOWER_INT8,
            "int8 per-tensor": per_tensor}


def bundle_titles(bundle: bundle_format.Bundle) -> list[str]:
    """Every item's title in the bundle's item order (the derived MicroLens data keeps them)."""
    titles_file = Path(bundle.manifest.dataset["path"]) / "titles.json"
    titles = json.loads(titles_file.read_text())
    if len(titles) != len(bundle.item_ids):
        raise SystemExit(f"{titles_file}: {len(titles)} titles for {len(bundle.item_ids)} items")
    return titles


def speed(args: argparse.Namespace, bundle: bundle_format.Bundle, files: dict[str, Path]):
    titles = bundle_titles(bundle)[: args.items]
    max_tokens = bundle.manifest.text_input.max_tokens
    rows, outputs = [], {}
    for name, path in files.items():
        for chunk in (16, args.batch):
            tower = TextTower(path, bundle.path, max_tokens, args.threads, chunk_size=chunk)
            tower(titles[: args.batch])  # warm-up
            started = time.perf_counter()
            parts = [tower(titles[start : start + args.batch])[0]
                     for start in range(0, len(titles), args.batch)]
            seconds = time.perf_counter() - started
            outputs.setdefault(name, np.concatenate(parts))
            rows.append({"tower": name, "chunk": chunk, "items_per_s": len(titles) / seconds,
                         "size_mb": path.stat().st_size / 2**20})
    reference = outputs["fp32"]
    parity = {}
    for name, vectors in outputs.items():
        cosine = (vectors * reference).sum(1) / (
            np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
        parity[name] = {"max_abs_over_scale": float(np.abs(vectors - reference).max()
                                                    / np.abs(reference).max()),
                        "min_cosine": float(cosine.min())}
    return {"rows": rows, "parity": parity, "items": len(titles), "batch": args.batch,
            "threads": args.threads}


def quality(args: argparse.Namespace, bundle: bundle_format.Bundle, files: dict[str, Path]):
    import torch

    from training.checkpoint import load_checkpoint
    from training.config import TrainConfig
    from training.pipeline import prepare_dataset
    from training.report import warm_cold_report
    from training.trainer import embeddings, users_after

    torch.set_num_threads(args.threads)
    config = TrainConfig(**bundle.manifest.config)
    dataset = prepare_dataset(args.data, config)
    titles = bundle_titles(bundle)
    model, _ = load_checkpoint(bundle.file(bundle_format.WEIGHTS))
    cached = model.states.clone()

    def test_report(states: torch.Tensor) -> dict[str, float]:
        model.features = states.reshape(model.features.shape)
        users, items = embeddings(model)
        report = warm_cold_report(users_after(model, users, dataset.valid), items, dataset,
                                  "test")
        return {f"{part} {metric}": report[part][metric] for part in ("all", "cold")
                for metric in ("hit@10", "ndcg@10")}

    rows = {"cached states (training's)": test_report(cached)}
    for name, path in files.items():
        tower = TextTower(path, bundle.path, bundle.manifest.text_input.max_tokens, args.threads)
        started = time.perf_counter()
        features = np.concatenate([tower(titles[start : start + 64])[2]
                                   for start in range(0, len(titles), 64)])
        print(f"{name}: {len(titles)} titles in {time.perf_counter() - started:.0f} s",
              flush=True)
        rows[name] = test_report(torch.as_tensor(features))
    return {"rows": rows, "threads": args.threads}


def write_table(record: dict[str, Any]) -> str:
    lines = ["# The text tower of a CROSSAN bundle (POST /items with raw text)", "",
             "Produced by", "", "```", *record["commands"], "```", "",
             f"Bundle: `{record['bundle']}`; machine: {record['machine']}.", ""]
    if "speed" in record:
        run = record["speed"]
        lines += [f"## Throughput ({run['items']} MicroLens titles in requests of "
                  f"{run['batch']}, {run['threads']} ONNX threads, tokenising included)", "",
                  "| tower | chunk | items/s | file MB | parity: max abs diff / scale "
                  "| parity: min cosine |", "| --- | --- | --- | --- | --- | --- |"]
        for row in run["rows"]:
            parity = run["parity"][row["tower"]]
            lines.append(f"| {row['tower']} | {row['chunk']} | {row['items_per_s']:.0f} | "
                         f"{row['size_mb']:.0f} | {parity['max_abs_over_scale']:.4f} | "
                         f"{parity['min_cosine']:.4f} |")
        lines += ["", "Chunk: texts of similar length run together, each chunk padded to its "
                  "own longest field (the batch size: one chunk, padded to the batch's "
                  "longest).", ""]
    if "quality" in record:
        rows = record["quality"]["rows"]
        columns = list(next(iter(rows.values())))
        lines += ["## Test quality when every item is embedded from its title by the tower",
                  "", "| item states from | " + " | ".join(columns) + " |",
                  "| --- |" + " --- |" * len(columns)]
        for name, metrics in rows.items():
            lines.append(f"| {name} | " + " | ".join(f"{metrics[c]:.4f}" for c in columns)
                         + " |")
        lines.append("")
    text = "\n".join(lines)
    (RESULTS / "text_tower.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("speed", "quality"))
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--data", default="microlens-50k")
    parser.add_argument("--items", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    bundle = bundle_format.load_bundle(args.bundle)
    if bundle.manifest.text_input is None:
        raise SystemExit(f"{args.bundle} is not a text bundle (no text_input in its manifest)")
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {"commands": []}
    with tempfile.TemporaryDirectory() as folder:
        files = tower_files(args.bundle, Path(folder))
        record[args.part] = (speed if args.part == "speed" else quality)(args, bundle, files)
    command = shlex.join(["python", "benchmarks/text_tower.py", *sys.argv[1:]])
    record["commands"] = [c for c in record["commands"] if c.split()[2] != args.part] + [command]
    record["bundle"], record["machine"] = str(args.bundle), platform.node()
    RECORD.write_text(json.dumps(record, indent=1))
    print(write_table(record))


if __name__ == "__main__":
    main()
