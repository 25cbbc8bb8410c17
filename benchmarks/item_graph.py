"""Cost of building the item-item content graph, against the catalogue size.

python benchmarks/item_graph.py --items 10000,100000 --dims 128,128 --threads 2

Synthetic unit-norm features (the graph's cost does not depend on their values) of the given
modality widths; for every size, the seconds of :meth:`ContentNeighbourGraph.build` (each
item's top ``k + 1`` among all items per modality, exact, in row chunks, and both sparse
graphs) and of one ``smooth`` of a 64-d table (what a training step adds). Writes
``benchmarks/results/item_graph.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.item_graph import ContentNeighbourGraph  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="10000,100000")
    parser.add_argument("--dims", default="128,128", help="modality widths")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "item_graph.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dims = [int(d) for d in args.dims.split(",")]
    lines = [
        "# Building the item-item content graph",
        "",
        "```",
        shlex.join(["python", *sys.argv]),
        "```",
        "",
        f"{args.threads} torch threads, k = {args.k}, modalities {dims}, every item a "
        "candidate (exact search).",
        "",
        "| items | build s | smooth of a 64-d table, ms |",
        "| --- | --- | --- |",
    ]
    for count in (int(n) for n in args.items.split(",")):
        generator = torch.Generator().manual_seed(0)
        keys = [torch.nn.functional.normalize(torch.randn(count, d, generator=generator), dim=1)
                for d in dims]
        graph = ContentNeighbourGraph(args.k, None, len(dims), torch.arange(count))
        started = time.perf_counter()
        graph.build(keys)
        build = time.perf_counter() - started
        table = torch.randn(count, 64)
        started = time.perf_counter()
        for _ in range(5):
            graph.smooth(table)
        smooth = (time.perf_counter() - started) / 5 * 1000
        lines.append(f"| {count:,} | {build:.1f} | {smooth:.1f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
