"""Cost of a training epoch, models measured back to back in one process (ratios only compare
inside one run: the machine's speed varies between days).

python benchmarks/epoch_cost.py --data tiktok --models lightgcn,metammf_lightgcn,early_lightgcn \
    --settings configs/tiktok_validation.json --epochs 3 --repeats 2

Per model: seconds per epoch of the trainer's own loop (:func:`training.trainer.run_epoch`:
batches, loss, backward, step), the seconds of one epoch's validation as the trainer does it
(:func:`training.trainer.validate_epoch`: one ranking of the validation users
``--epoch-valid-users`` leaves, every new-item scale of
:data:`training.calibration.EPOCH_GRID` scored in that one pass for models that have one), and
the whole epoch (loop + validation) against the first model's. No early stopping and no final
reports: only the epochs are timed, the first apart from the rest (it holds one-time work: CKD
builds its score tables there). Repeats are interleaved (A B A B), the median is reported.
A model named ``name+ckd`` is ``name`` with CKD's plug-in attached (:mod:`models.ckd`, the
default weights; ``name+ckd:1000`` with 1,000 generic triples a step instead of 5,000,
``name+ckd:0`` without the generic term, the ablation validation chose on TikTok;
``name+ckd:256:256`` also distils on 256 of the batch's triples a step; ``name@variant``
is ``name`` with the settings file's ``name@variant`` entry); its
teachers are the built model's own initial views (their values do not change what a step
costs, and a cost run should not train teachers first). ``--steps N`` times only the first N
batches of each epoch and scales the seconds up to a whole epoch (for a model whose epoch
takes minutes, such as CROSSAN on MicroLens-50K).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.base import Recommender  # noqa: E402
from models.ckd import CounterfactualDistillation, TeacherScores  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import Dataset  # noqa: E402
from training.pipeline import prepare_dataset  # noqa: E402
from training.trainer import (  # noqa: E402
    build_for,
    run_epoch,
    training_sampler,
    validate_epoch,
)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


class FirstSteps:
    """A sampler whose epochs stop after their first ``steps`` batches; ``scale`` turns the
    seconds of such an epoch into those of a whole one."""

    def __init__(self, sampler, steps: int, batch_size: int) -> None:
        self.sampler, self.steps = sampler, steps
        self.scale = max(math.ceil(len(sampler) / batch_size) / steps, 1.0)

    def epoch(self, batch_size: int):
        return itertools.islice(self.sampler.epoch(batch_size), self.steps)


def attach_ckd(model: Recommender, dataset: Dataset, generic_triples: int,
               batch_triples: int | None = None) -> None:
    teachers = []  # stand-ins: the untrained model's own views
    with torch.no_grad():
        for m in range(model.num_modalities):
            with model.modality_view({m}):
                contexts, items = model.context_embeddings()
            teachers.append(TeacherScores(contexts.clone(), items.clone()).prepared())
    model.add_loss_plugin(CounterfactualDistillation(
        teachers,
        torch.as_tensor(np.unique(dataset.train[:, 0])), dataset.num_items,
        generic_triples=generic_triples, generic=generic_triples > 0,
        batch_triples=batch_triples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="tiktok")
    parser.add_argument("--models", default="lightgcn,metammf_lightgcn")
    parser.add_argument("--settings", help="JSON {model: {lr, l2, l2_scope, hparams}}")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epoch-valid-users", type=int,
                        help="calibrate on a fixed sample of this many validation users")
    parser.add_argument("--steps", type=int, default=0,
                        help="time the first STEPS batches of an epoch, scaled to a whole one")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = json.loads(Path(args.settings).read_text()) if args.settings else {}
    models = [m for m in args.models.split(",") if m]
    loop: dict[str, list[float]] = {m: [] for m in models}
    validation: dict[str, list[float]] = {m: [] for m in models}
    first: dict[str, list[float]] = {m: [] for m in models}
    dataset = None
    for _ in range(args.repeats):
        for model in models:
            label, _, plugin = model.partition("+")
            name = label.partition("@")[0]  # name@variant: another setting of the same model
            setting = {"hparams": {}, **settings.get(label, settings.get(name, {}))}
            if args.epoch_valid_users is not None:  # the flag wins over the settings file
                setting["epoch_valid_users"] = args.epoch_valid_users
            config = TrainConfig(model=name, **setting)
            dataset = dataset or prepare_dataset(args.data, config)
            built = build_for(dataset, config, torch.device("cpu"))
            if plugin:
                kind, _, triples = plugin.partition(":")
                generic, _, batch = triples.partition(":")
                if kind != "ckd":
                    raise SystemExit(f"{model}: the only plug-in is "
                                     "+ckd[:generic triples[:batch triples]]")
                attach_ckd(built, dataset, int(generic or 5000), int(batch) if batch else None)
            sampler = training_sampler(dataset, config)
            scale = 1.0
            if args.steps:
                sampler = FirstSteps(sampler, args.steps, config.batch_size)
                scale = sampler.scale
            optimiser = torch.optim.Adam(built.parameters(), lr=config.lr)
            started = time.perf_counter()  # the first epoch: one-time work (CKD's tables)
            run_epoch(built, sampler, optimiser, config, torch.device("cpu"))
            first[model].append(time.perf_counter() - started)
            started = time.perf_counter()
            for _ in range(args.epochs):
                run_epoch(built, sampler, optimiser, config, torch.device("cpu"))
            loop[model].append((time.perf_counter() - started) * scale / args.epochs)
            sample = (dataset if args.epoch_valid_users is None
                      else dataset.with_valid_sample(args.epoch_valid_users, config.seed))
            started = time.perf_counter()
            validate_epoch(built, sample, config)
            validation[model].append(time.perf_counter() - started)
    base = statistics.median(loop[models[0]])
    whole = {m: statistics.median(loop[m]) + statistics.median(validation[m]) for m in models}
    lines = [
        f"# Seconds per training epoch on {args.data}",
        "",
        "```",
        shlex.join(["python", *sys.argv]),
        "```",
        "",
        f"{args.threads} torch threads, {args.epochs} epochs per run after a first one "
        f"timed apart, median of {args.repeats} interleaved runs. Ratio against {models[0]}."
        + (f" Each epoch cut to its first {args.steps} batches, the seconds scaled to a whole "
           "epoch (the first epoch's are not scaled)." if args.steps else ""),
        "",
        "| model | training loop s/epoch | ratio | first epoch s | + validation s "
        "| epoch with validation s | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model in models:
        seconds = statistics.median(loop[model])
        lines.append(f"| {model} | {seconds:.2f} | {seconds / base:.2f}x | "
                     f"{statistics.median(first[model]):.2f} | "
                     f"{statistics.median(validation[model]):.2f} | {whole[model]:.2f} | "
                     f"{whole[model] / whole[models[0]]:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out or RESULTS / f"epoch_cost_{Path(args.data).name}.md")
    out.write_text(text)


if __name__ == "__main__":
    main()
