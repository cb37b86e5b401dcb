"""python -m lstmgen.bench: lstmgen against cuDNN over a grid; table, JSON and heat map."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from lstmgen.bench.report import format_table, merge_cells, plot_heatmap, read_json, write_json
from lstmgen.runtime.layer import RECURRENCES


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lstmgen.bench", description=__doc__)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16", "float64", "tf32"],
                        help="tf32: float32 with TF32 allowed on both sides")
    parser.add_argument("--hidden", nargs="+", type=int, default=[128, 256, 512, 1024])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8, 64, 256])
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20,
                        help="timed runs per cell; the median is reported, and whether the two sides' runs overlap")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--recurrence", choices=RECURRENCES, default="auto",
                        help="how our layer runs its recurrence: as planned for the batch (auto), or always "
                             "the persistent kernels or always stepwise (a cuBLAS GEMM and a cell kernel a step)")
    parser.add_argument("--out", default="bench/results", help="folder for <gpu>.json and <gpu>.png")
    parser.add_argument("--include", type=Path, default=None, metavar="JSON",
                        help="an earlier run's JSON: its cells at the grid points not measured now join the report")
    args = parser.parse_args(argv)

    import torch

    from lstmgen.bench.measure import measure

    device = torch.cuda.get_device_name()
    cells = []
    for dtype in args.dtypes:
        for hidden in args.hidden:
            for batch in args.batch:
                measured = measure(dtype, hidden, batch, args.steps, args.repeats, args.warmup, args.recurrence)
                cells += measured
                # As it goes, so that a run cut short still shows what it measured.
                print(format_table(measured, header=False), file=sys.stderr, flush=True)
    if args.include is not None:
        merged = merge_cells(read_json(args.include), cells)
        print(f"{len(merged) - len(cells)} cells from {args.include}")
        cells = merged
    print(f"{device}, T={args.steps}, I=H, median of {args.repeats} runs; runs: whether the fastest and "
          f"slowest of ours and of cuDNN's overlap (then the run does not order the two)")
    print(format_table(cells))
    stem = Path(args.out) / re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-").lower()
    write_json(cells, stem.with_suffix(".json"), device)
    plot_heatmap(cells, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and {stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
