#!/usr/bin/env python3
"""Benchmark: time and peak memory of `genrec sid build` per tokenizer on one dataset; JSON on
stdout. Each build runs as its own process (peak RSS from wait4), with the same content
features, and reports the codebook figures of its report.json next to the cost, plus the cost
relative to the first method (the reference) in the same run.

  bench/bench_sid.py --data data/beauty [--genrec build/bin/genrec] [--features attributes:64 ...]
                     [--methods rq-kmeans,rq-vae] [--levels 3] [--codebook 256] [--threads 1]
                     [--import FILE --id-offset N] [--out DIR]

--import adds an "import" row (importing a code map, e.g. the LETTER reference IDs).
Standard library only.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_build(cmd):
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stderr.write(err.decode(errors="replace"))
        sys.exit(f"bench_sid: {' '.join(cmd)} exited with {code}")
    return seconds, usage.ru_maxrss / 1024.0  # kB -> MB


def summary(out_dir):
    report = json.loads((Path(out_dir) / "report.json").read_text())
    cb = report.get("codebook", {})
    return {
        "codes_used_per_level": [lvl.get("used") for lvl in cb.get("levels", [])],
        "codebook_sizes": [lvl.get("codebook_size") for lvl in cb.get("levels", [])],
        "collision_rate_before_disambiguation": cb.get("collision_rate_before_disambiguation"),
        "collision_rate": cb.get("collision_rate"),
        "relative_mse": (report.get("quantizer") or {}).get("relative_mse"),
        "stage_seconds": report.get("seconds"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--genrec", default="build/bin/genrec")
    ap.add_argument("--features", action="append", default=None)
    ap.add_argument("--methods", default="rq-kmeans,rq-vae")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codebook", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--import", dest="import_file")
    ap.add_argument("--id-offset", type=int, default=0)
    ap.add_argument("--out", help="keep the built code maps here (default: a temporary directory)")
    a = ap.parse_args()
    if not Path(a.genrec).is_file():
        sys.exit(f"bench_sid: {a.genrec}: no such binary (build first, or pass --genrec)")
    features = a.features or ["attributes:64"]
    root = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench_sid."))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    builds = [(m, ["--method", m, "--levels", str(a.levels), "--codebook", str(a.codebook)])
              for m in a.methods.split(",") if m]
    if a.import_file:
        builds.append(("import", ["--import", a.import_file, "--id-offset", str(a.id_offset)]))
    for name, extra in builds:
        out = root / name
        if out.exists():
            shutil.rmtree(out)  # a previous run of this benchmark
        cmd = [a.genrec, "sid", "build", "--data", a.data, "--threads", str(a.threads), "--out", str(out)] + extra
        if name != "import":
            for f in features:
                cmd += ["--features", f]
        print(f"bench_sid: {name} ...", file=sys.stderr)
        seconds, rss_mb = run_build(cmd)
        rows.append({"method": name, "seconds": round(seconds, 3), "peak_rss_mb": round(rss_mb, 1), **summary(out)})
    ref = rows[0]
    for r in rows:
        r["seconds_vs_" + ref["method"]] = round(r["seconds"] / ref["seconds"], 3)
        r["peak_rss_vs_" + ref["method"]] = round(r["peak_rss_mb"] / ref["peak_rss_mb"], 3)
    print(json.dumps({"benchmark": "sid_build", "data": a.data, "features": features, "threads": a.threads,
                      "results": rows}, indent=1))


if __name__ == "__main__":
    main()
