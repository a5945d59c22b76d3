"""Benchmark batch preprocessing and inference: cases per minute locally (in-process; 2 worker processes
for preprocess) and on a local Dask cluster (local:1, local:2), and the scheduler's overhead per case.
Run by hand; writes batch.md into --results (default benchmarks/results).

    python benchmarks/batch.py [--cases 8] [--results DIR]

Cases: copies (symbolic links) of ../shared/data/ct-volumes/copdgene-ct64/image.nrrd, a small real chest
CT (64 x 64 x 79 at 4 mm), preprocessed at 2 mm so the per-case work is small and the overhead shows;
inference with the shipped default model (which works at 1.5 mm). The overhead is
(Dask local:1 seconds - in-process seconds) / cases, cluster start-up and (infer) model loading included.
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


def scheduler_overhead(scans: Path, tmp: Path, cases: int) -> dict:
    """Seconds per tiny case in-process and through a warm Dask local:1 cluster (imports done, one task
    already run), both with one thread as a Dask worker has, so that the difference is what the scheduler
    itself costs per case."""
    import torch
    from dask.distributed import LocalCluster

    from lungct.ct.preprocess import preprocess_batch
    from lungct.recipes import load_recipe

    recipe = load_recipe("preprocess", {"Resampled.spacing_mm": 6.0})
    quiet = {"progress": False, "log": lambda m: None, "overwrite": True}
    seconds = {}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        preprocess_batch([scans], tmp / "warm", recipe, scheduler=cluster.scheduler_address, **quiet)
        threads = torch.get_num_threads()
        for label, options in (("local", {}), ("dask", {"scheduler": cluster.scheduler_address})):
            torch.set_num_threads(1 if label == "local" else threads)
            started = time.perf_counter()
            outcomes = preprocess_batch([scans], tmp / f"tiny-{label}", recipe, **options, **quiet)
            seconds[label] = (time.perf_counter() - started) / cases
            assert all(o.status == "ok" for o in outcomes)
        torch.set_num_threads(threads)
    return {"cases": cases, **seconds}


def main() -> None:
    from lungct.ct.preprocess import preprocess_batch
    from lungct.engine import InferOptions, infer
    from lungct.recipes import load_recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for batch.md")
    args = parser.parse_args()
    source = DATA / "ct-volumes/copdgene-ct64/image.nrrd"
    if not source.is_file():
        sys.exit(f"error: {source}: the shared data folder is missing")
    recipe = load_recipe("preprocess", {"Resampled.spacing_mm": 2.0})
    rows, infer_rows = [], []
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
            print(f"preprocess {label}: {seconds:.1f} s, {60 * args.cases / seconds:.1f} cases/min", flush=True)
        options = InferOptions(models=[], device="cpu")  # the shipped default CT model
        for label, scheduler in (("in-process (model loaded once)", None), ("Dask local:1", "local:1"),
                                 ("Dask local:2", "local:2")):
            out = Path(tmp) / ("infer-" + label.split()[0] + (scheduler or "").replace(":", ""))
            started = time.perf_counter()
            outcomes = infer([scans], out, options, progress=False, log=lambda m: None, scheduler=scheduler)
            seconds = time.perf_counter() - started
            assert all(o.status == "ok" for o in outcomes), [o.reason for o in outcomes if o.status != "ok"]
            infer_rows.append((label, seconds))
            print(f"infer {label}: {seconds:.1f} s, {60 * args.cases / seconds:.1f} cases/min", flush=True)
        overhead = scheduler_overhead(scans, Path(tmp), args.cases)
    base = rows[0][1]
    dask1 = dict(rows)["Dask local:1"]
    lines = ["# lungct batch benchmark: preprocess and infer", "",
             f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d %H:%M')}; {args.cases} cases of copdgene-ct64 "
             "(64×64×79); preprocess at 2 mm, infer with the shipped default model; wall time includes starting "
             "workers / the cluster and loading the model.", "",
             "| verb | run | seconds | cases per minute |", "|---|---|---|---|"]
    lines += [f"| preprocess | {label} | {seconds:.1f} | {60 * args.cases / seconds:.1f} |" for label, seconds in rows]
    lines += [f"| infer | {label} | {seconds:.1f} | {60 * args.cases / seconds:.1f} |" for label, seconds in infer_rows]
    infer_dask1 = dict(infer_rows)["Dask local:1"]
    lines += ["", f"Dask local:1 vs in-process per case: preprocess {(dask1 - base) / args.cases:.2f} s, "
                  f"infer {(infer_dask1 - infer_rows[0][1]) / args.cases:.2f} s. Most of it is not the scheduler: "
                  "a fresh worker imports torch and MONAI (and, for infer, loads the model) on its first case, and "
                  "Dask starts workers with one BLAS/OpenMP thread while the in-process run uses both cores.",
              "", f"Scheduler overhead per case, measured apart on a warm local:1 cluster with a tiny case "
                  f"(copdgene-ct64 at 6 mm, {overhead['cases']} cases, one thread on both sides, in-process {overhead['local']:.3f} s/case, "
                  f"Dask {overhead['dask']:.3f} s/case): **{overhead['dask'] - overhead['local']:.3f} s**."]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "batch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
