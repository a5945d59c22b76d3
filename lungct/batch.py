"""Running one task per case: in this process, in a local process pool, or on a Dask cluster; and
splitting a case list into shards for plain job arrays (SLURM, Kubernetes) — nnU-Net's
`-num_parts/-part_id`.

    run_tasks(task, items, workers=1, scheduler=None)  ->  yields task(item) results as they finish

`task` must be a picklable top-level function that never raises for a bad case (it returns a failure
outcome instead); an exception that still escapes (a worker killed mid-case) becomes `on_crash(item, err)`.
`scheduler` is a Dask address ("tcp://head:8786") or "local:N" (a LocalCluster of N single-threaded
worker processes started here). Each case writes its outputs under a temporary name and renames them,
so a worker that dies leaves no partial output and a rerun completes the missing cases.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

from lungct.errors import LungctError


def shard(items: list, num_parts: int = 1, part_id: int = 0, key=lambda item: item.name) -> list:
    """The `part_id`-th of `num_parts` disjoint shards, by the items' names sorted (stable across machines)."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise LungctError(None, f"--part-id must be between 0 and --num-parts - 1 ({num_parts - 1}), got {part_id}")
    ordered = sorted(items, key=key)
    return [item for index, item in enumerate(ordered) if index % num_parts == part_id]


def local_workers(scheduler: str) -> int | None:
    """N of "local:N" (None for the address of a running cluster)."""
    if not scheduler.startswith("local:"):
        return None
    count = scheduler.split(":", 1)[1]
    if not count.isdigit() or int(count) < 1:
        raise LungctError(None, f"--scheduler {scheduler}: expected local:N with N workers")
    return int(count)


def torch_threads_per_task(scheduler: str) -> int:
    """Threads a task's network may use: the cores split among the N workers of a local:N cluster; on a
    remote cluster LUNGCT_TORCH_THREADS, else 1 (workers started as `--nworkers <cores> --nthreads 1`)."""
    count = local_workers(scheduler)
    if count:
        return max(1, (os.cpu_count() or 1) // count)
    return max(1, int(os.environ.get("LUNGCT_TORCH_THREADS", "1") or 1))


def worker_lost(source, err: Exception) -> str:
    """The one-line reason for a case whose worker died (or whose task escaped its own error handling)."""
    return f"{source}: worker lost ({type(err).__name__}: {' '.join(str(err).split())[:160]})"


def run_tasks(task, items: list, *args, workers: int = 1, scheduler: str | None = None, on_crash=None):
    """Yield task(item, *args) for every item, in completion order."""
    if scheduler:
        yield from _run_dask(task, items, args, scheduler, on_crash)
    elif workers <= 1:
        for item in items:
            yield task(item, *args)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(task, item, *args): item for item in items}
            for future in as_completed(futures):
                yield _result(future, futures[future], on_crash)


def _result(future, item, on_crash):
    try:
        return future.result()
    except Exception as err:  # a worker process died or the task escaped its own error handling
        if on_crash is None:
            raise
        return on_crash(item, err)


def _run_dask(task, items, args, scheduler: str, on_crash):
    try:
        from dask.distributed import Client, LocalCluster, as_completed as dask_completed
    except ImportError:
        raise LungctError(None, "--scheduler needs Dask: pip install 'lungct[cluster]' (dask[distributed])") from None
    cluster, count = None, local_workers(scheduler)
    if count:
        cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None)
    address = cluster or scheduler
    try:
        client = Client(address, timeout="30s")
    except (OSError, TimeoutError) as err:
        if cluster is not None:
            cluster.close()
        raise LungctError(None, f"--scheduler {scheduler}: cannot reach the Dask scheduler ({err})") from None
    try:
        futures = {client.submit(task, item, *args, pure=False, retries=0): item for item in items}
        for future in dask_completed(futures):
            yield _result(future, futures[future], on_crash)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
