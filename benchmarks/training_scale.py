"""Training cost against data size: seconds per epoch and peak memory of the served model.

flock /tmp/measure.lock python benchmarks/training_scale.py
    (the defaults: --sizes tiktok,microlens-50k,x10,x30,x100 --models early_lightgcn,lightgcn
    --distributed microlens-50k --steps 5 --step-seconds 50 --full-epoch-steps 150; ~12 min)

The served model is ``early_lightgcn`` as ``configs/tiktok_serving.json`` configures it;
LightGCN as ``configs/tiktok_lightgcn_refit.json`` (64-d, 2 layers) is the reference. Both are
refit configurations, so an epoch passes over the training and the validation rows: the
``interactions`` column counts those rows. What is timed is the trainer's own loop
(:func:`training.trainer.run_epoch`: batches, loss, backward, Adam step) after one untimed
warm-up (an epoch, or a step where only steps are timed); no validation, no reports. Every
configuration runs in a process of its own, so its peak RSS (``ru_maxrss`` of
``getrusage(RUSAGE_SELF)`` in that process, data loading included) is its own; with two
processes the column is the sum of the two ranks' peaks (one node holds both).

Sizes: ``tiktok`` and ``microlens-50k`` are the shared data sets; ``x<k>`` is MicroLens-50K
grown k times (:func:`benchmarks.synthetic_catalogue.grown_microlens`, drawn in memory, no
file). Decision: users and interactions grow k times (a user's activity stays MicroLens's: at
least 5, about 7 on average), items sqrt(k) times (catalogues grow slower than audiences, so
item degrees grow sqrt(k) times), one 384-d text modality as MicroLens's MiniLM features, and
MicroLens's leave-one-out split. ``x10``: 500,000 users, 60,779 items, about 3.5 million
interactions; ``x100``: 5 million users, 192,200 items, about 35 million (``x30`` between, a
third point for the lines). A synthetic size whose peak memory the GiB line of the sizes
before it puts over ``--memory-share`` of MemAvailable is not run: its row says so and holds
what the lines predict, marked "pred.".

An epoch of more than ``--full-epoch-steps`` batches is timed on its first ``--steps`` batches
(fewer, at least two, where the warm-up step says they would take over ``--step-seconds``;
drawn before the clock starts) and scaled to the whole epoch, marked "est.". The
``--distributed`` sizes also run under ``torchrun --nproc-per-node 2`` (gloo on CPU,
``--threads`` split between the ranks) on the same global batch: wall time of the slowest rank
per epoch against the one-process row (every rank propagates the whole graph,
:mod:`training.distributed`, so on shared cores little is gained).

Each step propagates the whole graph, so a step costs about ``c0 + c1 * M`` seconds (M million
interactions) and an epoch grows with the square of the data; both that line and the straight
``s/epoch = a + b * M`` are fitted, with their worst error on the sizes they were fitted on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.epoch_cost import FirstSteps  # noqa: E402
from benchmarks.harness import RESULTS, ROOT  # noqa: E402
from benchmarks.synthetic_catalogue import grown_microlens, grown_microlens_shape  # noqa: E402
from benchmarks.training_scale_report import fit_model, measured, render, seconds_cell  # noqa: E402

CONFIGS = {"early_lightgcn": "configs/tiktok_serving.json",
           "lightgcn": "configs/tiktok_lightgcn_refit.json"}
GIB = 2.0**30

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.data import Dataset


def load_size(data: str, config: TrainConfig) -> Dataset:
    """A shared data set by name, or ``x<k>``, prepared as ``config`` trains on it."""
    from training.pipeline import prepare_dataset

    if not data.startswith("x"):
        return prepare_dataset(data, config)
    dataset = grown_microlens(float(data[1:]))
    if config.cold_start_fraction > 0 or config.feature_set != "dataset":
        raise SystemExit(f"{data}: a synthetic size takes no cold-start share or feature set")
    return dataset.with_validation_in_training() if config.refit is not None else dataset


class Replay:
    """Batches drawn beforehand, handed out as one epoch (``run_epoch``'s sampler)."""

    def __init__(self, batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self.batches = batches

    def epoch(self, batch_size: int):
        return iter(self.batches)


def child(spec: dict[str, Any]) -> None:
    """One configuration, timed in this process (a rank of it under torchrun)."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from training import distributed
    from training.config import TrainConfig, load_config_file
    from training.trainer import TrainingStep, build_for, run_epoch, training_sampler

    torch.set_num_threads(spec["threads"])
    ctx = distributed.context()
    cpu = torch.device("cpu")
    started = time.perf_counter()
    config = TrainConfig(**load_config_file(ROOT / CONFIGS[spec["model"]]))
    dataset = load_size(spec["data"], config)
    model = build_for(dataset, config, cpu)
    sampler = training_sampler(dataset, config)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    step = TrainingStep(model, config)
    if ctx.active:
        step = DistributedDataParallel(step, find_unused_parameters=True)
    steps = math.ceil(len(sampler) / config.batch_size)
    sliced = steps > spec["full_epoch_steps"]

    def epoch(source: Any) -> None:
        model.begin_epoch()
        run_epoch(model, source, optimiser, config, cpu, step, ctx)

    def barrier() -> float:
        if ctx.active:
            dist.barrier()
        return time.perf_counter()

    def every_rank(value: dict[str, float]) -> list[dict[str, float]]:
        if not ctx.active:
            return [value]
        out: list[dict[str, float]] = [{}] * ctx.world
        dist.all_gather_object(out, value)
        return out

    warm = barrier()
    epoch(FirstSteps(sampler, 1, config.batch_size) if sliced else sampler)
    warm = max(r["s"] for r in every_rank({"s": barrier() - warm}))  # the same on every rank
    timed, runs = steps, []
    if sliced:  # as many steps as --steps and --step-seconds allow, at least two, each timed
        timed = min(spec["steps"], max(int(spec["step_budget"] / max(warm, 1e-3)), 2), steps)
        runs = [Replay([batch]) for batch in FirstSteps(sampler, timed, config.batch_size)
                .epoch(config.batch_size)]
        model.begin_epoch()  # once: an epoch's own work (none in these configurations)
    setup = time.perf_counter() - started
    times = []
    for run in runs or [sampler] * min(max(math.ceil(3.0 / max(warm, 1e-3)), 2), 3):
        clock = barrier()
        if sliced:
            run_epoch(model, run, optimiser, config, cpu, step, ctx)
        else:
            epoch(run)
        times.append(barrier() - clock)
    # a shared machine's noise only ever adds: the median step, the fastest whole epoch
    seconds = statistics.median(times) * steps if sliced else min(times)
    ranks = every_rank({"seconds": seconds,
                        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
    if ctx.writes:
        print("RESULT " + json.dumps({
            **spec, "users": dataset.num_users, "items": dataset.num_items,
            "interactions": len(dataset.train), "batch": config.batch_size,
            "steps_per_epoch": steps, "timed_steps": timed, "estimated": sliced,
            "epoch_seconds": max(r["seconds"] for r in ranks),
            "seconds_per_step": max(r["seconds"] for r in ranks) / steps,
            "rss_gib": sum(r["rss"] for r in ranks) / GIB, "setup_seconds": setup,
            "load": os.getloadavg()[0], "times": [round(t, 4) for t in times]}), flush=True)
    if ctx.active:
        dist.destroy_process_group()


def measure(spec: dict[str, Any], processes: int) -> dict[str, Any]:
    """Run one configuration in a fresh process (``processes`` > 1: under torchrun)."""
    spec = {**spec, "processes": processes, "threads": max(spec["threads"] // processes, 1)}
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={processes}"]
    command = [*launcher, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env,
                          check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return {**spec, "failed": f"exit status {done.returncode}: {tail[:160]}"}


def predict(rows: list[dict[str, Any]], spec: dict[str, Any], fit_from: float
            ) -> dict[str, Any] | None:
    """What the lines through the rows so far say a synthetic size costs (None: no lines)."""
    model, data = spec["model"], spec["data"]
    synthetic = [r for r in rows if measured(r, model) and r["data"].startswith("x")]
    if not data.startswith("x") or not synthetic:
        return None
    f = fit_model(rows, model, fit_from)
    if math.isnan(f["c1"]):
        return None
    k, ref = float(data[1:]), synthetic[-1]
    interactions = round(ref["interactions"] * k / float(ref["data"][1:]))
    steps, millions = math.ceil(interactions / f["batch"]), interactions / 1e6
    users, items = grown_microlens_shape(k)
    return {**spec, "processes": 1, "users": users, "items": items,
            "interactions": interactions, "batch": f["batch"], "steps_per_epoch": steps,
            "estimated": True, "seconds_per_step": f["c0"] + f["c1"] * millions,
            "epoch_seconds": steps * (f["c0"] + f["c1"] * millions),
            "rss_gib": f["g0"] + f["g1"] * millions}


def available_gib() -> float:
    """MemAvailable of /proc/meminfo (inf where there is none)."""
    meminfo = Path("/proc/meminfo")
    for line in meminfo.read_text().splitlines() if meminfo.exists() else []:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / GIB
    return math.inf


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every configuration, one process each; a synthetic size whose memory the lines so far
    put over the limit is not run, and its row is what the lines predict."""
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown model(s) {sorted(unknown)}; known: {sorted(CONFIGS)}")
    distributed = [] if args.distributed == "none" else args.distributed.split(",")
    rows: list[dict[str, Any]] = []
    for data in args.sizes.split(","):
        for model in models:
            for processes in [1] + ([2] if data in distributed and model == models[0] else []):
                spec = {"data": data, "model": model, "steps": args.steps,
                        "step_budget": args.step_seconds, "threads": args.threads,
                        "full_epoch_steps": args.full_epoch_steps}
                started = time.perf_counter()
                guess = predict(rows, spec, args.fit_from) if processes == 1 else None
                limit = args.max_gib or args.memory_share * available_gib()
                if guess is not None and guess["rss_gib"] > limit:
                    rows.append({**guess, "skipped": f"not run: needs ≈{guess['rss_gib']:.0f} "
                                 f"GiB by the GiB line, the limit was {limit:.0f} GiB"})
                else:
                    rows.append(measure(spec, processes))
                print(f"{data} {model} x{processes}: "
                      f"{rows[-1].get('failed') or seconds_cell(rows[-1]) + ' s/epoch'} "
                      f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiktok,microlens-50k,x10,x30,x100",
                        help="shared data set names, or x<k>: MicroLens-50K grown k times")
    parser.add_argument("--models", default="early_lightgcn,lightgcn")
    parser.add_argument("--distributed", default="microlens-50k",
                        help="sizes also run on 2 processes (first model); 'none' for none")
    parser.add_argument("--steps", type=int, default=5,
                        help="at most this many batches timed on long epochs")
    parser.add_argument("--step-seconds", type=float, default=50.0,
                        help="fewer timed batches (at least two) where the warm-up step says "
                             "--steps would take longer than this")
    parser.add_argument("--full-epoch-steps", type=int, default=150,
                        help="epochs of more batches than this are timed on --steps batches")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fit-from", type=float, default=1e6,
                        help="fit the lines on sizes of at least this many interactions")
    parser.add_argument("--memory-share", type=float, default=0.85,
                        help="skip a size whose predicted peak exceeds this share of "
                             "MemAvailable")
    parser.add_argument("--max-gib", type=float, help="a fixed limit instead")
    parser.add_argument("--out", type=Path, default=RESULTS / "training_scale.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return
    text = render(run_all(args), argv, args.fit_from)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
