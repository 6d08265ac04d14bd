#!/usr/bin/env python3
"""Tabulates genrec run directories: test metrics at the best validation epoch, mean ± std over
the runs of each group, and the wall-clock time to the best checkpoint.

  scripts/summarize_runs.py [--keys K1,K2,...] GROUP=RUN_DIR[,RUN_DIR...] [GROUP=...]

--keys picks the metrics (default: the retrieval ones; ranking runs, e.g.
--keys like/auc,like/gauc,like/logloss,rating/rmse). e.g. scripts/summarize_runs.py "beauty sasrec=runs/b-sasrec-s42,runs/b-sasrec-s43,runs/b-sasrec-s44"
Prints a Markdown table. Standard library only.
"""
import json
import statistics
import sys
from pathlib import Path

KEYS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "mrr"]


def cell(values, digits=4):
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main(argv):
    keys = KEYS
    if len(argv) > 2 and argv[1] == "--keys":
        keys = argv[2].split(",")
        argv = argv[:1] + argv[3:]
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        sys.exit(__doc__)
    print("| runs | seeds | " + " | ".join(keys) + " | best epoch | to best (min) | total (min) |")
    print("|---" * (len(keys) + 5) + "|")
    for arg in argv[1:]:
        group, dirs = arg.split("=", 1)
        rows = []
        for d in dirs.split(","):
            path = Path(d) / "metrics.json"
            try:
                rows.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError) as e:
                sys.exit(f"{path}: {e}")
        metrics = [[r["metrics"][k] for r in rows] for k in keys]
        epochs = ", ".join(str(r.get("best_epoch", "?")) for r in rows)
        to_best = [r.get("seconds_to_best", float("nan")) / 60 for r in rows]
        total = [r.get("train_seconds", float("nan")) / 60 for r in rows]
        print(f"| {group} | {len(rows)} | " + " | ".join(cell(m) for m in metrics) +
              f" | {epochs} | {cell(to_best, 1)} | {cell(total, 1)} |")


if __name__ == "__main__":
    main(sys.argv)
