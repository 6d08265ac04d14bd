#!/usr/bin/env python3
"""Prints a run's learning curve from its train_log.jsonl: the validation metrics of every
evaluated epoch against the cumulative wall time (training + validation), as a Markdown table,
and optionally as JSON.

  scripts/learning_curve.py [--keys recall@10,ndcg@10] [--json] RUN_DIR [RUN_DIR ...]

Rows are the epochs that were evaluated (train.eval_every); "best" marks the epochs that became
the best checkpoint. Standard library only.
"""
import json
import sys
from pathlib import Path

KEYS = ["recall@10", "ndcg@10"]


def read_log(run):
    path = Path(run) / "train_log.jsonl"
    if not path.is_file():
        sys.exit(f"{path}: not found (is {run} a genrec run directory?)")
    rows = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON: {e}")
    return rows


def main(argv):
    keys, as_json, runs = KEYS, False, []
    i = 1
    while i < len(argv):
        if argv[i] == "--keys" and i + 1 < len(argv):
            keys = argv[i + 1].split(",")
            i += 2
        elif argv[i] == "--json":
            as_json = True
            i += 1
        elif argv[i].startswith("-"):
            sys.exit(__doc__)
        else:
            runs.append(argv[i])
            i += 1
    if not runs:
        sys.exit(__doc__)
    out = {}
    for run in runs:
        curve = []
        for row in read_log(run):
            valid = row.get("valid")
            if not isinstance(valid, dict):
                continue
            point = {"epoch": row.get("epoch"), "minutes": round(row.get("elapsed_seconds", 0.0) / 60, 2),
                     "best": bool(row.get("best"))}
            for k in keys:
                if k in valid:
                    point[k] = valid[k]
            curve.append(point)
        out[run] = curve
        if not as_json:
            print(f"\n{run}\n")
            print("| epoch | wall time (min) | " + " | ".join(f"valid {k}" for k in keys) + " | best |")
            print("|---|---|" + "---|" * len(keys) + "---|")
            for p in curve:
                vals = " | ".join(f"{p[k]:.4f}" if k in p else "—" for k in keys)
                print(f"| {p['epoch']} | {p['minutes']:.1f} | {vals} | {'*' if p['best'] else ''} |")
    if as_json:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv)
