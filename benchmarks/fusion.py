"""Factored (CP) vs full-tensor MetaMMF fusion: forward+backward time at TikTok sizes.

Run: ``python benchmarks/fusion.py`` (from the repository root). Prints a Markdown table and
writes it to ``benchmarks/results/fusion.md``.

Setting (paper section 5.2 / DESIGN.md): 6,710 items with 256 input features (128 visual +
128 acoustic), ``d_m = 32``, ``d_s = 5``, ``R = 16``, ``first_hidden = 256``; N = 1 and N = 2
fusion layers. Each step fuses a batch of 3,000 items (the paper's batch size) and, as a second
block, all 6,710 items (what ``forward()`` of a MetaMMF model does every training step). The
full-tensor fusion is loaded with exactly the CP reconstruction of the factored one
(``MetaMMFFusion.to_full()``), so the two compute the same function; the last column is the
largest absolute difference of their outputs. Timings are medians of interleaved repeats
(factored and full alternate) on random features.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.fusion import MetaMMFFusion  # noqa: E402

NUM_ITEMS, VISUAL, ACOUSTIC = 6710, 128, 128
D_M, D_S, RANK, FIRST_HIDDEN = 32, 5, 16, 256


class DynamicLayersOnly(torch.nn.Module):
    """The fusion tower with s_i given: the part the CP factoring changes (no extractor MLP)."""

    def __init__(self, fusion: MetaMMFFusion, s: torch.Tensor) -> None:
        super().__init__()
        self.fusion, self.s = fusion, s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for n, layer in enumerate(self.fusion.layers):
            h = layer(h, self.s)
            if n < len(self.fusion.layers) - 1:
                h = torch.nn.functional.leaky_relu(h, self.fusion.negative_slope)
        return h


def _step(fusion: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> Callable[[], float]:
    def run() -> float:
        fusion.zero_grad(set_to_none=True)
        start = time.perf_counter()
        out = fusion(x)
        (out * grad_out).sum().backward()
        return (time.perf_counter() - start) * 1e3

    return run


def measure(
    num_layers: int, rows: int, repeats: int, full_repeats: int, layers_only: bool = False
) -> dict[str, float]:
    """Median forward+backward ms of both forms on ``rows`` items, and their max output gap."""
    torch.manual_seed(num_layers)
    features = torch.randn(NUM_ITEMS, VISUAL + ACOUSTIC)
    x = features[torch.randperm(NUM_ITEMS)[:rows]]
    factored = MetaMMFFusion(
        VISUAL + ACOUSTIC, D_M, num_layers, FIRST_HIDDEN, meta_dim=D_S, rank=RANK
    )
    full = factored.to_full()
    if layers_only:
        with torch.no_grad():
            s = factored.extractor(x)
        factored, full = DynamicLayersOnly(factored, s), DynamicLayersOnly(full, s)
    with torch.no_grad():
        max_diff = (factored(x) - full(x)).abs().max().item()
    grad_out = torch.randn(rows, D_M)
    run_factored, run_full = _step(factored, x, grad_out), _step(full, x, grad_out)
    run_factored(), run_full()  # warm-up
    times_factored, times_full = [], []
    for k in range(repeats):
        times_factored.append(run_factored())
        if k < full_repeats:
            times_full.append(run_full())
    return {
        "factored": statistics.median(times_factored),
        "full": statistics.median(times_full),
        "max_diff": max_diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs of the factored form")
    parser.add_argument("--full-repeats", type=int, default=5, help="timed runs of the full form")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "fusion.md"
    )
    args = parser.parse_args()

    header = (
        "| what | N | items / step | factored ms | full ms | speed-up | max abs output diff |\n"
        "|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for layers_only in (False, True):
        scope = "dynamic layers only (s_i given)" if layers_only else "whole fusion (eq. 7 + 12)"
        for rows in (3000, NUM_ITEMS):
            for num_layers in (1, 2):
                r = measure(num_layers, rows, args.repeats, args.full_repeats, layers_only)
                lines.append(
                    f"| {scope} | {num_layers} | {rows} | {r['factored']:.1f} | "
                    f"{r['full']:.1f} | {r['full'] / r['factored']:.0f}x | {r['max_diff']:.1e} |"
                )
                print(lines[-1], flush=True)
    table = "\n".join(lines)
    machine = (
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} intra-op threads, float32, CPU"
    )
    report = (
        "# MetaMMF fusion: factored CP vs full tensor (forward + backward)\n\n"
        "Produced by `python benchmarks/fusion.py`. Input 256 = 128 visual + 128 acoustic "
        f"(TikTok), d_m={D_M}, d_s={D_S}, R={RANK}, first hidden {FIRST_HIDDEN} "
        "(N=2: 256 -> 256 -> 32). Median of "
        f"{args.repeats} (factored) / {args.full_repeats} (full) interleaved runs; "
        'full = same function with every item\'s W_i materialised (`mode="full"` loaded from '
        f"`cp_tensor()`).\n\nMachine: {machine}.\n\n{table}\n\n"
        "The whole fusion includes the meta-information extractor MLP (F->64->64->d_s), the same "
        "in both forms; at N=1 it is most of the factored form's time, which caps that ratio. "
        "The 'dynamic layers only' rows time what the CP factoring changes.\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"\n{machine}\nwritten to {args.out}")


if __name__ == "__main__":
    main()
