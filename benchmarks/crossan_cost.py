"""CROSSAN's training cost against fine-tuning the whole text encoder (the paper's Table 4).

    python benchmarks/crossan_cost.py [--data microlens-50k] [--users 128] [--steps 5]

Every variant runs in its own process (so peak memory is its own) on the same named subset:
``--steps`` measured training steps (after one warm-up step) of ``--users`` users each, drawn
with a fixed seed from MicroLens-50K, on eq. 7-8's loss with Adam. Seconds per epoch are
extrapolated: the trainer's epoch at ``batch_size = --users`` has ``ceil(train rows /
--users)`` steps. Variants:

- ``crossan``, ``indsan``, ``sasrec_text``, ``sasrec``: the registered models on the cached
  per-layer states (the frozen encoder never runs in training);
- ``full_finetune``: all-MiniLM-L6-v2 trainable end to end on the token ids of both title
  fields (mean pooling of the last layer per field, a linear map, the mean over the fields),
  with the same sequence encoder and loss.

Peak memory: the process's peak resident set (``ru_maxrss``) and its growth over the training
steps (the data and the encoder loaded before them are not counted in the growth). Writes
``benchmarks/results/crossan_cost.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.text_fields import tokenize_fields  # noqa: E402
from models.base import TrainingBatch  # noqa: E402
from models.crossan import SequentialRecommender  # noqa: E402
from models.text_tower import pool_states  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.feature_sets import titles_of  # noqa: E402
from training.pipeline import prepare_dataset  # noqa: E402
from training.trainer import build_for, model_inputs  # noqa: E402

VARIANTS = ("crossan", "indsan", "sasrec_text", "sasrec", "full_finetune")
HPARAMS = {"embed_dim": 64, "max_length": 10}


class FullFineTune(SequentialRecommender):
    """The sequence model over a trainable MiniLM run on the token ids of both fields."""

    def __init__(self, graph, ids: torch.Tensor, masks: torch.Tensor, folder: Path) -> None:
        from transformers import AutoModel

        super().__init__(graph, None, item_encoder="ids", **HPARAMS)
        del self.item_embedding  # the encoder embeds every item
        self.item_encoder = "finetune"
        self.text = AutoModel.from_pretrained(folder, local_files_only=True)
        self.project = torch.nn.Linear(self.text.config.hidden_size, HPARAMS["embed_dim"])
        self.register_buffer("ids", ids, persistent=False)  # [I, fields, tokens]
        self.register_buffer("masks", masks, persistent=False)

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        ids, masks = self.ids[items], self.masks[items]
        width = max(int(masks.sum(-1).max()), 1)
        flat_ids, flat_masks = ids[..., :width].flatten(0, 1), masks[..., :width].flatten(0, 1)
        hidden = self.text(input_ids=flat_ids, attention_mask=flat_masks).last_hidden_state
        pooled = pool_states(hidden.unsqueeze(1), flat_masks, "mean")[:, 0]
        return self.project(pooled).reshape(len(items), ids.shape[1], -1).mean(1)


def _full_finetune(dataset, config) -> FullFineTune:
    from training.encoders import get_encoder_spec, load_tokenizer

    spec = get_encoder_spec("minilm")
    folder = spec.folder()
    ids, masks = map(torch.as_tensor, tokenize_fields(load_tokenizer(folder, spec.max_length),
                                                      titles_of(dataset)))
    torch.manual_seed(config.seed)
    graph, _, _ = model_inputs(dataset, config)
    return FullFineTune(graph, ids, masks, folder)


def measure(variant: str, data: str, users: int, steps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    model_name = "sasrec_text" if variant == "full_finetune" else variant
    feature_set = "dataset" if variant in ("sasrec", "full_finetune") else "title_fields"
    config = TrainConfig(model=model_name, feature_set=feature_set, hparams=dict(HPARAMS),
                         batch_size=users)
    dataset = prepare_dataset(data, config)
    if variant == "full_finetune":
        model = _full_finetune(dataset, config)
    else:
        model = build_for(dataset, config, torch.device("cpu"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    rng = np.random.default_rng(0)
    model.train()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = []
    for step in range(steps + 1):
        chosen = torch.as_tensor(rng.choice(dataset.num_users, users, replace=False))
        batch = TrainingBatch(chosen, chosen, chosen)
        started = time.perf_counter()
        loss = model.training_losses(batch)["softmax"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step:  # the first step is a warm-up
            seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_step = float(np.median(seconds))
    steps_per_epoch = math.ceil(len(dataset.train) / users)
    return {"variant": variant, "trainable": trainable, "s_per_step": per_step,
            "steps_per_epoch": steps_per_epoch, "s_per_epoch": per_step * steps_per_epoch,
            "peak_mib": peak / 1024, "growth_mib": (peak - before) / 1024,
            "measured_steps": len(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="microlens-50k")
    parser.add_argument("--users", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one variant
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.data, args.users, args.steps, args.threads)))
        return
    rows = []
    for variant in args.variants.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--one", variant, "--data", args.data, "--users",
             str(args.users), "--steps", str(args.steps), "--threads", str(args.threads)],
            capture_output=True, text=True, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    full = next((r for r in rows if r["variant"] == "full_finetune"), None)
    lines = [
        f"# CROSSAN training cost on {args.data} (Table 4 style)", "",
        "```", shlex.join(["python", *sys.argv]), "```", "",
        f"{args.threads} torch threads; a step: {args.users} users (their newest 11 items), eq. "
        f"7-8, Adam; median of {args.steps} measured steps after a warm-up; s/epoch = s/step x "
        "steps of the trainer's epoch at this batch size (extrapolated). Peak: the process's "
        "peak RSS; growth: its rise over the steps.", "",
        "| variant | trainable params | vs full FT | s/step | s/epoch (extrapolated) "
        "| speed-up vs full FT | peak RSS MiB | growth MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        share = f"{r['trainable'] / full['trainable']:.1%}" if full else "-"
        speed = f"{full['s_per_step'] / r['s_per_step']:.1f}x" if full else "-"
        lines.append(f"| {r['variant']} | {r['trainable']:,} | {share} | {r['s_per_step']:.3f} "
                     f"| {r['s_per_epoch']:.0f} | {speed} | {r['peak_mib']:.0f} "
                     f"| {r['growth_mib']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "benchmarks" / "results" / "crossan_cost.md").write_text(text)


if __name__ == "__main__":
    main()
