"""One batch path for every verb: run a task per case, here, in a local process pool or on a Dask
cluster; isolate failures; show progress; report outcomes; split a case list into shards.

    run_cases(task, items, *args, workers=1, scheduler=None)  ->  [Outcome] as the cases finish

`task(item, *args)` must be a picklable top-level function returning an Outcome; `guarded` turns anything
it raises into a failed Outcome with a one-line reason, so one bad case never stops a batch. An exception
that still escapes (a worker killed mid-case) becomes a failure too. `scheduler` is a Dask address
("tcp://head:8786") or "local:N" (a LocalCluster of N single-threaded worker processes started here).
Each case writes its outputs under temporary names and renames them, so a worker that dies leaves no
partial output and a rerun completes the missing cases (resume). `shard` is nnU-Net's
`-num_parts/-part_id` for plain job arrays (SLURM, Kubernetes).
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context

from lungct.errors import LungctError
from lungct.os_names import printable


@dataclass
class Outcome:
    """What became of one case."""

    name: str
    source: str
    status: str  # "ok", "skipped" or "failed"
    reason: str = ""
    record: dict | None = None
    seconds: float = 0.0


def guarded(name: str, source, work, *args) -> Outcome:
    """Run `work(*args)` (returning the case's record) and turn every failure into a one-line Outcome."""
    started = time.perf_counter()
    try:
        record = work(*args)
        return Outcome(name, str(source), "ok", record=record, seconds=time.perf_counter() - started)
    except LungctError as err:
        reason = str(err) if err.source else printable(f"{source}: {err}")
    except MemoryError:
        reason = printable(f"{source}: out of memory")
    except Exception as err:  # a bug on one case must not stop the batch; keep a hint of where
        where = traceback.format_exc(limit=6).strip().splitlines()
        hint = where[-3].strip() if len(where) > 2 else ""
        reason = " ".join(printable(f"{source}: internal error {type(err).__name__}: {err} [{hint}]").split())
    return Outcome(name, str(source), "failed", reason, seconds=time.perf_counter() - started)


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


def threads_per_task(scheduler: str | None, workers: int = 1) -> int:
    """Threads one task may use: the cores split among local workers; on a remote cluster
    LUNGCT_TORCH_THREADS, else 1 (workers started as `--nworkers <cores> --nthreads 1`)."""
    cores = os.cpu_count() or 1
    if not scheduler:
        return max(1, cores // max(1, workers))
    count = local_workers(scheduler)
    if count:
        return max(1, cores // count)
    return max(1, int(os.environ.get("LUNGCT_TORCH_THREADS", "1") or 1))


def limit_threads(threads: int) -> None:
    """Keep the tasks that share a machine from oversubscribing its cores."""
    import SimpleITK as sitk
    import torch

    if torch.get_num_threads() != max(1, threads):
        torch.set_num_threads(max(1, threads))
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, threads))


def run_cases(task, items: list, *args, workers: int = 1, scheduler: str | None = None, progress: bool = True,
              log=print, desc: str = "cases", unit: str = "case", on_outcome=None, prefetch=None) -> list[Outcome]:
    """Run task(item, *args) for every item with a progress bar; print warnings and failures as they come;
    `on_outcome(outcome)` after each (e.g. to rewrite a report). Returns the outcomes in finishing order.

    `prefetch(item)` (in this process only): a first stage (reading, preprocessing) run in a thread one item
    ahead, so it overlaps the task's own work on the item before; the task then gets `prefetched=` its
    result (or the exception it raised). One item is held ahead: memory stays that of two items."""
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress or len(items) < 2, dynamic_ncols=True)
    outcomes = []

    def say(message: str) -> None:
        with tqdm.external_write_mode(file=sys.stderr):
            log(message)

    results = (_prefetched(task, items, args, prefetch) if prefetch is not None and not scheduler and workers <= 1
               else _results(task, items, args, workers, scheduler))
    for outcome in results:
        outcomes.append(outcome)
        bar.update(1)
        bar.set_postfix_str(outcome.name[:30])
        for warning in (outcome.record or {}).get("warnings", []):
            say(f"warning: {outcome.name}: {warning}")
        if outcome.status == "failed":
            say(f"FAILED {outcome.reason}")
        if on_outcome is not None:
            on_outcome(outcome)
    bar.close()
    return outcomes


def _prefetched(task, items, args, prefetch):
    from concurrent.futures import ThreadPoolExecutor

    def first_stage(item):
        try:
            return prefetch(item)
        except BaseException as err:  # handed to the task, which reports it like its own failure
            return err

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        ahead = pool.submit(first_stage, items[0]) if items else None
        for index, item in enumerate(items):
            ready = ahead.result()
            ahead = pool.submit(first_stage, items[index + 1]) if index + 1 < len(items) else None
            yield task(item, *args, prefetched=ready)


def _results(task, items, args, workers: int, scheduler: str | None):
    if scheduler:
        yield from _run_dask(task, items, args, scheduler)
    elif workers <= 1:
        for item in items:
            yield task(item, *args)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(task, item, *args): item for item in items}
            for future in as_completed(futures):
                yield _result(future, futures[future])


def _result(future, item) -> Outcome:
    try:
        return future.result()
    except Exception as err:  # the worker process died, or the task escaped its own guard
        source = getattr(item, "source", item)
        return Outcome(getattr(item, "name", str(item)), str(source), "failed",
                       printable(f"{source}: worker lost ({type(err).__name__}: {' '.join(str(err).split())[:160]})"))


def _run_dask(task, items, args, scheduler: str):
    try:
        from dask.distributed import Client, LocalCluster, as_completed as dask_completed
    except ImportError:
        raise LungctError(None, "--scheduler needs Dask: pip install 'lungct[cluster]' (dask[distributed])") from None
    cluster, count = None, local_workers(scheduler)
    if count:
        cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        client = Client(cluster or scheduler, timeout="30s")
    except (OSError, TimeoutError) as err:
        if cluster is not None:
            cluster.close()
        raise LungctError(None, f"--scheduler {scheduler}: cannot reach the Dask scheduler ({err})") from None
    try:
        futures = {client.submit(task, item, *args, pure=False, retries=0): item for item in items}
        for future in dask_completed(futures):
            yield _result(future, futures[future])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def counts(outcomes: list[Outcome]) -> dict:
    return {status: sum(o.status == status for o in outcomes) for status in ("ok", "skipped", "failed")}


def summary_line(outcomes: list[Outcome], where) -> str:
    """'3 done, 1 skipped (already done), 0 failed -> out/' for the end of a batch."""
    n = counts(outcomes)
    return f"{n['ok']} done, {n['skipped']} skipped (already done), {n['failed']} failed -> {where}"
