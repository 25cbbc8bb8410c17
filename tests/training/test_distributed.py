"""torchrun with DistributedDataParallel: 2 CPU processes (gloo) compute the gradient that one
process computes on the same global batch, and LightGCN's parameters after two epochs match.

MetaMMF's parameters are compared through their gradients only: Adam divides each gradient by
its own running magnitude, so a parameter whose gradient is near zero moves by a full learning
rate in the direction of its float rounding noise, and the sums of two half batches round
differently from the sum of one (measured: 7e-4 apart after 4 steps, with gradients equal to
1e-7). Random training terms (``new_item_dropout``) draw their masks on each rank, from the same
distribution but not as the same draws, so they are off here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.distributed import Context

pytestmark = pytest.mark.slow  # over 5 s a test: left out of the quick loop (-m "not slow")

ROOT = Path(__file__).resolve().parents[2]

TRAIN = """
import sys, torch
from training.config import TrainConfig
from training.data import load_dataset
from training.trainer import train
torch.set_num_threads(1)
hparams = {"new_item_dropout": 0.0} if sys.argv[2] != "lightgcn" else {}
config = TrainConfig(model=sys.argv[2], max_epochs=2, patience=5, batch_size=512, lr=0.01,
                     l2=1e-5, seed=7, hparams=hparams)
result = train(load_dataset(sys.argv[1]), config, progress=False)
from training import distributed
if distributed.context().writes:
    torch.save({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, sys.argv[3])
"""


GRADIENT = """
import sys, torch
from models.base import TrainingBatch
from torch.nn.parallel import DistributedDataParallel
from training import distributed
from training.config import TrainConfig
from training.data import load_dataset
from training.trainer import TrainingStep, build_for, training_sampler
torch.set_num_threads(1)
ctx = distributed.context()
dataset = load_dataset(sys.argv[1])
hparams = {"new_item_dropout": 0.0} if sys.argv[2] != "lightgcn" else {}
config = TrainConfig(model=sys.argv[2], l2=1e-5, seed=7, batch_size=2048, hparams=hparams)
model = build_for(dataset, config, torch.device("cpu"))
model.train()
step = TrainingStep(model, config)
if ctx.active:
    step = DistributedDataParallel(step, find_unused_parameters=True)
users, positives, negatives = next(training_sampler(dataset, config).epoch(config.batch_size))
part = ctx.shard(len(users))
batch = TrainingBatch(*(torch.as_tensor(a[part]) for a in (users, positives, negatives)))
torch.stack(list(step(batch).values())).sum().backward()
if ctx.writes:
    torch.save({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
               sys.argv[3])
"""


def _run(tmp_path: Path, data: Path, model: str, processes: int,
         code: str = TRAIN) -> dict[str, torch.Tensor]:
    out = tmp_path / f"{model}-{processes}-{len(code)}.pt"
    script = tmp_path / f"script-{len(code)}.py"
    script.write_text(code)
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={processes}"]
    result = subprocess.run([*launcher, str(script), str(data), model, str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                 "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return torch.load(out)


def test_shards_cover_a_batch_once() -> None:
    parts = [Context(rank, 3).shard(10) for rank in range(3)]
    assert [(p.start, p.stop) for p in parts] == [(0, 3), (3, 7), (7, 10)]


def test_two_processes_train_lightgcn_as_one_does(tiktok_sample, tmp_path) -> None:
    one = _run(tmp_path, tiktok_sample, "lightgcn", 1)
    two = _run(tmp_path, tiktok_sample, "lightgcn", 2)
    assert one.keys() == two.keys()
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert worst < 1e-5, worst


@pytest.mark.parametrize("model", ["lightgcn", "metammf_lightgcn"])
def test_two_processes_compute_the_global_batch_gradient(tiktok_sample, tmp_path, model):
    one = _run(tmp_path, tiktok_sample, model, 1, GRADIENT)
    two = _run(tmp_path, tiktok_sample, model, 2, GRADIENT)
    assert one.keys() == two.keys() and len(one) >= 2
    for name in one:
        scale = float(one[name].abs().max()) + 1e-12
        assert float((one[name] - two[name]).abs().max()) <= 1e-5 * max(scale, 1.0), name
