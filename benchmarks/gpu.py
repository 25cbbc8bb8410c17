"""The GPU path, checked against the CPU: run it whenever a device machine is lent.

python benchmarks/gpu.py [--data tiktok] [--bundle bundles/tiktok] [--items 1000000]

Three checks, each on the GPU when it has one and against the CPU result of the same work:

1. **FAISS**: an exact inner-product index over ``--items`` synthetic items at the served
   dimension (352), built and searched on the CPU and (faiss-gpu) on the GPU; build and search
   times, and the GPU's recall@100 against the CPU's lists.
2. **ONNX towers**: the bundle's item tower (``--bundle``, or a factory bundle) on 4,096 items with
   the CPU provider and with ``CUDAExecutionProvider``; the largest difference and the times.
3. **Training**: one epoch of the served model (``configs/tiktok_serving.json``, no refit) on
   ``--data``, on the CPU and on CUDA, from the same initial weights and the same batches; the
   epoch's mean loss, its validation Recall@20 and the times.

Where a piece is missing (no CUDA torch, faiss without GPUs, onnxruntime without the CUDA
provider) its row says so instead of a number, so a run on a machine without a GPU writes a
table that says none was lent. Writes ``benchmarks/results/gpu.md``; meant to fit a few minutes
on one GPU (``--items 1000000``, one epoch).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bundle as bundle_format  # noqa: E402
from bundle.towers import EMBEDDING, FEATURES  # noqa: E402

DIM = 352  # the served TikTok model's vector size
QUERIES, K = 256, 100
Row = dict[str, Any]


def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def faiss_check(items: int, seed: int = 0) -> Row:
    import faiss

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((items, DIM), dtype=np.float32)
    queries = rng.standard_normal((QUERIES, DIM), dtype=np.float32)
    cpu = faiss.IndexFlatIP(DIM)
    _, cpu_build = timed(lambda: cpu.add(vectors))
    (_, cpu_ids), cpu_search = timed(lambda: cpu.search(queries, K))
    row: Row = {"check": f"FAISS exact, {items:,} x {DIM}", "cpu": f"build {cpu_build:.2f} s, "
                f"{QUERIES} queries {cpu_search * 1000:.0f} ms"}
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if not gpus:
        return {**row, "gpu": "no GPU for faiss (faiss-cpu, or no device)", "agrees": "-"}
    resources = faiss.StandardGpuResources()
    gpu = faiss.GpuIndexFlatIP(resources, DIM)
    _, gpu_build = timed(lambda: gpu.add(vectors))
    gpu.search(queries[:8], K)  # warm-up
    (_, gpu_ids), gpu_search = timed(lambda: gpu.search(queries, K))
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(gpu_ids, cpu_ids, strict=True)])
    return {**row, "gpu": f"build {gpu_build:.2f} s, {QUERIES} queries "
            f"{gpu_search * 1000:.0f} ms", "agrees": f"recall@100 {recall:.4f} "
            f"({'ok' if recall >= 0.999 else 'DIFFERS'})"}


def tower_check(bundle_path: Path | None, workdir: Path) -> Row:
    import onnxruntime as ort

    if bundle_path is None or not (bundle_path / bundle_format.MANIFEST).exists():
        from bundle.testing import make_bundle

        bundle_path = make_bundle(workdir / "factory", num_items=4096).path
    tower = bundle_path / bundle_format.ITEM_TOWER
    manifest = bundle_format.read_manifest(bundle_path)
    width = sum(m.dim for m in manifest.modalities)
    features = np.random.default_rng(0).standard_normal((4096, width), dtype=np.float32)

    def run(providers: list[str]) -> tuple[np.ndarray, float]:
        session = ort.InferenceSession(str(tower), providers=providers)
        session.run([EMBEDDING], {FEATURES: features[:64]})  # warm-up
        (out,), seconds = timed(lambda: session.run([EMBEDDING], {FEATURES: features}))
        return out, seconds

    cpu, cpu_s = run(["CPUExecutionProvider"])
    row: Row = {"check": f"ONNX item tower ({bundle_path.name}), 4,096 items",
                "cpu": f"{cpu_s * 1000:.1f} ms"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {**row, "gpu": "no CUDAExecutionProvider (onnxruntime, not onnxruntime-gpu)",
                "agrees": "-"}
    gpu, gpu_s = run(["CUDAExecutionProvider", "CPUExecutionProvider"])
    diff = float(np.abs(gpu - cpu).max() / max(np.abs(cpu).max(), 1e-12))
    return {**row, "gpu": f"{gpu_s * 1000:.1f} ms", "agrees": f"max relative difference "
            f"{diff:.1e} ({'ok' if diff < 1e-3 else 'DIFFERS'})"}


def epoch_check(data: str) -> Row:
    import torch

    from training.config import TrainConfig, load_config_file
    from training.pipeline import prepare_dataset
    from training.trainer import build_for, run_epoch, training_sampler, validate_epoch

    config = TrainConfig(**{**load_config_file(ROOT / "configs" / "tiktok_serving.json"),
                            "refit": None, "max_epochs": 1})
    dataset = prepare_dataset(data, config)

    def one_epoch(device: torch.device) -> tuple[float, float, float]:
        model = build_for(dataset, config, torch.device("cpu")).to(device)  # same initial weights
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
        (losses, _), seconds = timed(lambda: run_epoch(
            model, training_sampler(dataset, config), optimiser, config, device))
        model.eval()
        recall = validate_epoch(model, dataset, config)["recall@20"]
        return float(np.mean(losses)), recall, seconds

    cpu_loss, cpu_recall, cpu_s = one_epoch(torch.device("cpu"))
    row: Row = {"check": f"one {config.model} epoch on {data}",
                "cpu": f"{cpu_s:.1f} s, loss {cpu_loss:.4f}, valid R@20 {cpu_recall:.4f}"}
    if not torch.cuda.is_available():
        return {**row, "gpu": "no CUDA device for torch", "agrees": "-"}
    gpu_loss, gpu_recall, gpu_s = one_epoch(torch.device("cuda"))
    same = abs(gpu_loss - cpu_loss) <= 1e-3 * abs(cpu_loss) and abs(gpu_recall - cpu_recall) <= 2e-3
    return {**row, "gpu": f"{gpu_s:.1f} s ({torch.cuda.get_device_name()}), loss "
            f"{gpu_loss:.4f}, valid R@20 {gpu_recall:.4f}",
            "agrees": "ok" if same else "DIFFERS (loss within 0.1%, R@20 within 0.002 expected)"}


def device_line() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"GPU: {torch.cuda.get_device_name()} (torch {torch.__version__})"
    except ImportError:
        pass
    return "no GPU on this machine: every GPU column says why; the CPU columns still measure"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="tiktok")
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "tiktok")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--skip-epoch", action="store_true", help="no training check")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checks: list[Callable[[], Row]] = [lambda: faiss_check(args.items),
                                           lambda: tower_check(args.bundle, Path(tmp))]
        if not args.skip_epoch:
            checks.append(lambda: epoch_check(args.data))
        for check in checks:
            rows.append(check())
            print(json.dumps(rows[-1]), flush=True)
    lines = [
        "# The GPU path against the CPU", "", "```",
        f"python benchmarks/gpu.py --data {args.data} --items {args.items}"
        + (" --skip-epoch" if args.skip_epoch else ""), "```", "",
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}; {device_line()}.", "",
        "| check | CPU | GPU | GPU agrees with CPU |", "| --- | --- | --- | --- |",
        *(f"| {r['check']} | {r['cpu']} | {r['gpu']} | {r['agrees']} |" for r in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
