"""Where a kernel's warps wait: the top warp-stall locations of an Nsight Compute source page.

    ncu -i step.ncu-rep --page source --csv --print-source sass > step.csv
    python -m lstmgen.bench.stalls step.csv

Per kernel: the share of stall samples by reason, then the instructions that hold the most
samples, each with its two main reasons. .ci/gpu's profile stage writes such CSVs.
"""

import argparse
import csv
from collections import Counter


def kernels(rows: list[list[str]]) -> dict[str, list[dict[str, str]]]:
    """The page's per-instruction rows by kernel: a "Kernel Name" line, a header, the rows."""
    found, header, name = {}, None, None
    for row in rows:
        if row[:1] == ["Kernel Name"]:
            name, header = row[1], None
            found[name] = []
        elif row[:1] == ["Address"]:
            header = row
        elif name and header and len(row) == len(header):
            found[name].append(dict(zip(header, row)))
    return found


def report(instructions: list[dict[str, str]], top: int) -> list[str]:
    samples = lambda row: float(row["Warp Stall Sampling (All Samples)"] or 0)
    reasons = [key for key in instructions[0] if key.startswith("stall_") and "Not Issued" not in key]
    total = sum(map(samples, instructions)) or 1
    by_reason = Counter({r.removeprefix("stall_"): sum(float(i[r] or 0) for i in instructions) for r in reasons})
    lines = ["  by reason: " + ", ".join(f"{r} {n / total:.0%}" for r, n in by_reason.most_common(6))]
    for index, row in sorted(sorted(enumerate(instructions), key=lambda item: -samples(item[1]))[:top]):
        main = Counter({r.removeprefix("stall_"): float(row[r] or 0) for r in reasons}).most_common(2)
        lines.append(f"  {index:5} {samples(row) / total:6.1%}  {row['Source'].strip()[:60]:60} "
                     + " ".join(f"{r}:{n:.0f}" for r, n in main))
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lstmgen.bench.stalls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="ncu --page source --csv --print-source sass output")
    parser.add_argument("--top", type=int, default=15, help="instructions listed per kernel")
    args = parser.parse_args(argv)
    with open(args.csv, newline="") as file:
        for name, instructions in kernels(list(csv.reader(file))).items():
            print(f"{name}: {len(instructions)} instructions")
            print("\n".join(report(instructions, args.top)))


if __name__ == "__main__":
    main()
