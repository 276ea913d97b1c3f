#!/usr/bin/env python3
"""Medians and spread of the criterion benches of this package, from the last run.

For every benchmark under target/criterion/{tracked_work,hooks}, reads new/sample.json (each
sample: total time over its iterations) and prints, per iteration: the median over samples, the
10th and 90th percentiles, the number of samples, and each tracked-work contender's median as a
multiple of the task_tracker floor at the same N.

    python3 benches/summarize.py [target-dir]
"""

import json
import pathlib
import statistics
import sys


def per_iteration(path):
    data = json.loads(path.read_text())
    return sorted(t / i for t, i in zip(data["times"], data["iters"]))


def quantile(xs, q):
    return xs[round((len(xs) - 1) * q)]


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e3:.1f} µs"


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target") / "criterion"
    print("| benchmark | samples | median | p10 – p90 | × task_tracker |")
    print("|---|---|---|---|---|")
    for group in ("tracked_work", "hooks"):
        medians = {}
        rows = []
        for sample in sorted((root / group).glob("*/*/new/sample.json")):
            name, n = sample.parts[-4], sample.parts[-3]
            xs = per_iteration(sample)
            median = statistics.median(xs)
            medians[(name, n)] = median
            rows.append((name, n, xs, median))
        rows.sort(key=lambda r: (int(r[1]), r[0]))
        for name, n, xs, median in rows:
            floor = medians.get(("task_tracker", n)) if group == "tracked_work" else None
            ratio = f"{median / floor:.2f}×" if floor else ""
            spread = f"{fmt(quantile(xs, 0.1))} – {fmt(quantile(xs, 0.9))}"
            print(f"| {group}/{name}/{n} | {len(xs)} | **{fmt(median)}** | {spread} | {ratio} |")


if __name__ == "__main__":
    main()
