"""Dask for torch: the cluster the scores and the factors run on, and a loop over shard tasks.

Workers are single-threaded Dask processes (torch sets its own threads per worker), one per GPU where
there are GPUs, under settings that keep Dask's housekeeping out of torch's way (``TORCH_FRIENDLY_DASK``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch
from tqdm.auto import tqdm

from influence.settings import Cluster
from influence.shards import Shard
from pipeline.core.errors import WherefromError
from pipeline.core.model import available_cores


def pin_gpu() -> int | None:
    """On a machine with several GPUs, LocalCluster worker ``i`` takes GPU ``i mod n``: one worker per GPU.
    (Workers of an external cluster are pinned by whoever starts them, e.g. ``dask cuda worker``.)"""
    if not torch.cuda.is_available():
        return None
    try:
        from distributed import get_worker

        name = get_worker().name
    except ValueError:  # not inside a Dask worker
        return None
    if not isinstance(name, int):
        return None
    device = name % torch.cuda.device_count()
    torch.cuda.set_device(device)
    return device


# Dask defaults that cost torch dearly, measured with two single-threaded workers on two cores:
# - ``MALLOC_TRIM_THRESHOLD_=65536`` makes glibc hand every large tensor back to the OS and fault it in
#   again: scoring in such a worker ran 1.85x slower than the same code in the main process;
# - the worker's sampling profiler takes the GIL every 10 ms: two workers scored 1.31-1.80x one worker's
#   rate with it, 1.64-1.92x without;
# - every event loop (client, scheduler, each nanny and worker) wakes every 20 ms for a health check that
#   only logs, and the memory and system monitors poll every 0.1 and 0.5 s: the main process burnt 0.8 s
#   of CPU per 14 s of scoring and each worker switched context ~800 times. With these at 1 s, 1 s and
#   5 s, two workers scored 1.89-2.01x one worker in four paired runs.
# The README gives them as YAML for workers started by hand.
TORCH_FRIENDLY_DASK = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}


@contextlib.contextmanager
def dask_client(cfg: Cluster) -> Iterator:
    """A client on ``cfg.scheduler``, or on a LocalCluster of ``cfg.workers`` single-threaded processes (torch
    threads inside each worker are set by the job, so processes never oversubscribe cores), both under
    ``TORCH_FRIENDLY_DASK``. With ``cfg.processes`` false, one worker runs in this process instead: the same
    scheduler and tasks, without a worker process to start. Several workers are always processes: a worker keeps
    its prepared model in module state (``influence/scoring/jobs.py``), which threads of one process would share."""
    import dask
    from dask.distributed import Client, LocalCluster

    with dask.config.set(TORCH_FRIENDLY_DASK):
        if cfg.scheduler:
            try:
                client = Client(cfg.scheduler, timeout=cfg.connect_timeout_s)
            except OSError as err:
                raise WherefromError(f"dask.scheduler: {cfg.scheduler}: cannot connect within {cfg.connect_timeout_s}s "
                                     f"(dask.connect_timeout_s): {str(err).splitlines()[0]}") from None
            with client:
                yield client
            return
        processes = cfg.processes or cfg.workers > 1
        with LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=processes, dashboard_address=None,
                          silence_logs=40) as cluster, Client(cluster) as client:
            yield client


def threads_per_worker(requested: int, workers: int) -> int:
    return requested or max(1, available_cores() // workers)


def warm_up(client, prepare_fn: Callable, job) -> list[str]:
    """Every worker present runs ``prepare_fn(job)`` now, in parallel (a worker that joins later does so in
    its first task), so that the shards' rate is the steady one; returns the workers. Loose placement: a
    worker that dies here must not leave its warm-up waiting for it forever."""
    workers = list(client.scheduler_info()["workers"])
    client.gather([client.submit(prepare_fn, job, workers=[w], allow_other_workers=True, pure=False) for w in workers])
    return workers


def run_shards(client, task: Callable, todo: list[Shard], job, name: str, unit: str = "shard",
               counted: str = "docs") -> int:
    """``task(shard, job)`` for every shard in ``todo`` (anything with an ``index``: a retrain too), as Dask tasks
    named ``name``; returns the sum of what they return (``counted``: documents done). A bar counts shards and
    ``counted``/s; a worker's failure is one line here (its traceback is in the worker's own log)."""
    from dask.distributed import as_completed

    done, start = 0, time.perf_counter()
    with tqdm(total=len(todo), desc=name, unit=unit, mininterval=1.0) as bar:
        futures = client.map(task, todo, job=job, key=[f"{name}-{job.run_key}-{s.index:05d}" for s in todo])
        for future in as_completed(futures):
            try:
                done += future.result()
            except WherefromError:
                raise
            except Exception as err:
                raise WherefromError(f"{name}: a worker failed on {future.key}: {type(err).__name__}: {err}") from None
            bar.update(1)
            bar.set_postfix({counted: done, f"{counted}_per_s": f"{done / (time.perf_counter() - start):.1f}"})
    return done
