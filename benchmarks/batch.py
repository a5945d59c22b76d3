"""Benchmark batch preprocessing: cases per minute locally (1 and 2 worker processes) and on a local Dask
cluster (local:1, local:2), and the scheduler's overhead per case. Run by hand; writes
benchmarks/results/batch.md.

    python benchmarks/batch.py [--cases 8]

Cases: copies (symbolic links) of ../shared/data/ct-volumes/copdgene-ct64/image.nrrd, a small real chest
CT (64 x 64 x 79 at 4 mm), processed at 2 mm so the per-case work is small and the overhead shows.
The overhead is (Dask local:1 seconds - in-process seconds) / cases.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    from lungct.preprocess import preprocess_batch
    from lungct.recipes import load_recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    args = parser.parse_args()
    source = DATA / "ct-volumes/copdgene-ct64/image.nrrd"
    if not source.is_file():
        sys.exit(f"error: {source}: the shared data folder is missing")
    recipe = load_recipe("preprocess", {"Resampled.spacing_mm": 2.0})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scans = Path(tmp) / "scans"
        scans.mkdir()
        for i in range(args.cases):
            (scans / f"case{i:02d}.nrrd").symlink_to(source)
        for label, options in (("in-process (1 worker)", {"workers": 1}), ("2 local processes", {"workers": 2}),
                               ("Dask local:1", {"scheduler": "local:1"}), ("Dask local:2", {"scheduler": "local:2"})):
            out = Path(tmp) / label.replace(" ", "_").replace(":", "")
            started = time.perf_counter()
            outcomes = preprocess_batch([scans], out, recipe, progress=False, log=lambda m: None, **options)
            seconds = time.perf_counter() - started
            assert all(o.status == "ok" for o in outcomes), [o.reason for o in outcomes if o.status != "ok"]
            rows.append((label, seconds))
            print(f"{label}: {seconds:.1f} s, {60 * args.cases / seconds:.1f} cases/min", flush=True)
    base = rows[0][1]
    dask1 = dict(rows)["Dask local:1"]
    lines = ["# lungct batch preprocessing benchmark", "",
             f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d %H:%M')}; {args.cases} cases of copdgene-ct64 "
             "(64×64×79) processed at 2 mm; wall time includes starting workers / the cluster.", "",
             "| run | seconds | cases per minute |", "|---|---|---|"]
    lines += [f"| {label} | {seconds:.1f} | {60 * args.cases / seconds:.1f} |" for label, seconds in rows]
    lines += ["", f"Dask scheduler overhead per case (local:1 vs in-process, cluster start-up included): "
                  f"{(dask1 - base) / args.cases:.2f} s"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
