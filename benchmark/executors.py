"""Where cells run: in this process, in a pool of worker processes, or as Ray tasks on a cluster.

Executors only run ``run_cell`` and hand records back; the driver (``runner``)
writes every record and talks to MLflow, so workers never race on files or on
the tracking store. An executor pulls cells from the iterable it is given only
when it has room to start one, so the runner can claim each cell just before
it starts (see ``results.try_claim``), and calls the runner's hook factory when
the cell starts (the driver opens the cell's MLflow run then); the cell's
progress and each task's validation row come back through those hooks, from a
worker over its pipe.

A worker process that dies under a cell (an OOM kill, a segfault, ``os._exit``)
costs that cell alone: it is recorded as failed with how the worker ended, a
new worker takes the dead one's place, and the other cells go on. Workers end
themselves when their driver dies (even by SIGKILL), so none is left behind.

Thread counts change float results (the order of reductions), so every executor
sets ``torch.set_num_threads`` for each cell from an explicit ``threads`` value
and records it in the cell's provenance: by default all cores in this process,
``cpu_count // jobs`` per worker process, and the cell's CPU request on Ray.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing import connection, get_context
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from benchmark.cell import run_cell
from benchmark.config import CellConfig
from benchmark.errors import UserError
from benchmark.learner import TaskCache
from benchmark.results import FAILED, CellResult
from benchmark.worker import main as worker_main

RAY_INSTALL_HINT = "pip install core-tokenset-bench[ray]"


def _no_status(message: str, advance: int) -> None:
    pass


def _no_task(candidate: int, index: int, row: list[float]) -> None:
    pass


def _no_end(at: int) -> None:
    pass


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class CellHooks:
    """What a running cell reports to the driver: its progress, each task's validation row as it
    ends (``cell.TaskHook``), and when its computation ended (ms since the epoch, where it ran)."""

    status: Callable[[str, int], None] = _no_status
    task_ended: Callable[[int, int, list[float]], None] = _no_task
    ended: Callable[[int], None] = _no_end


HookFactory = Callable[[CellConfig], CellHooks]  # called as the cell starts; the driver opens its run then


class Executor(Protocol):
    def run(self, cells: Iterable[CellConfig], commit: str, hooks: HookFactory) -> Iterator[CellResult]:
        """Run the cells pulled from ``cells``; yield each one's result as it ends."""
        ...


@dataclass(frozen=True)
class ExecutorOptions:
    """What ``run --executor ... --jobs --threads --ray-address --cpus-per-cell --gpus-per-cell`` set."""

    weights_dir: Path
    jobs: int = 1
    threads: int | None = None  # None: the executor's default (module docstring)
    ray_address: str | None = None  # None: $RAY_ADDRESS, else a local Ray instance
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0


def with_threads(result: CellResult, threads: int) -> CellResult:
    return dataclasses.replace(result, provenance={**result.provenance, "threads": threads})


def run_with_threads(
    config: CellConfig,
    commit: str,
    cache: TaskCache,
    weights_dir: Path,
    threads: int,
    hooks: CellHooks | None = None,
) -> CellResult:
    """``run_cell`` at exactly ``threads`` intra-op threads (restored after), recorded in provenance."""
    hooks = hooks or CellHooks()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = run_cell(config, commit, cache, weights_dir, hooks.status, hooks.task_ended)
    finally:
        torch.set_num_threads(before)
    return with_threads(result, threads)


@dataclass(frozen=True)
class LocalExecutor:
    """Sequential, in this process; the task cache is shared by every cell."""

    in_process: ClassVar[bool] = True  # a cell that kills its process kills the run (results: deaths)
    cache: TaskCache
    weights_dir: Path
    threads: int

    def run(self, cells: Iterable[CellConfig], commit: str, hooks: HookFactory) -> Iterator[CellResult]:
        for config in cells:
            cell_hooks = hooks(config)
            result = run_with_threads(config, commit, self.cache, self.weights_dir, self.threads, cell_hooks)
            cell_hooks.ended(now_ms())
            yield result


# --- Worker processes --------------------------------------------------------------------------------------
#
# Not concurrent.futures: one worker that dies breaks a ProcessPoolExecutor for good (every cell in
# flight is lost with it, and every rerun repeats that), and a multiprocessing.Pool waits forever on a
# task whose worker died. Here each worker has a pipe of its own, so the driver knows which cell each
# one runs and what became of it.


def serve_cells(pipe: connection.Connection) -> None:
    """A worker's loop (``benchmark.worker``): run each cell the driver sends, reporting progress,
    task rows and the result over ``pipe``; leave when the driver says so or is gone."""
    cache = TaskCache()
    pipe.send(("ready",))
    while True:
        try:
            job = pipe.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        config, commit, weights_dir, threads = job
        hooks = CellHooks(
            status=lambda message, advance: pipe.send(("status", message, advance)),
            task_ended=lambda candidate, index, row: pipe.send(("task", candidate, index, row)),
        )
        result = run_with_threads(config, commit, cache, weights_dir, threads, hooks)
        pipe.send(("result", result, now_ms()))


def process_end(exitcode: int | None) -> str:
    """How a process ended: ``was killed by SIGKILL (...)`` or ``exited with status 3``."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        return f"was killed by {name}" + (" (out of memory, or a kill)" if name == "SIGKILL" else "")
    return f"exited with status {exitcode}"


def death_message(exitcode: int | None) -> str:
    """The error of the failed record of a cell whose worker died under it."""
    return (
        f"WorkerDied: the worker process running this cell {process_end(exitcode)}; --retry-failed reruns it"
    )


@dataclass
class Worker:
    """One worker process, its pipe, and the cell it runs (with that cell's hooks)."""

    process: BaseProcess
    pipe: connection.Connection
    ready: bool = False
    cell: CellConfig | None = None
    hooks: CellHooks = field(default_factory=CellHooks)


@dataclass(frozen=True)
class ProcessExecutor:
    """``jobs`` worker processes on this machine, each with ``threads`` threads."""

    jobs: int
    weights_dir: Path
    threads: int

    def _start(self) -> Worker:
        context = get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(target=worker_main, args=(theirs, os.getpid()), daemon=True)
        process.start()
        theirs.close()
        return Worker(process, ours)

    def run(self, cells: Iterable[CellConfig], commit: str, hooks: HookFactory) -> Iterator[CellResult]:
        source = iter(cells)
        waiting = next(source, None)  # no worker starts for a grid with nothing to run
        if waiting is None:
            return
        workers: list[Worker] = []
        with exit_on_sigterm():
            try:
                while True:
                    if waiting is not None:  # a worker for each slot (again, where one died)
                        workers += [self._start() for _ in range(self.jobs - len(workers))]
                    for worker in workers:
                        if worker.ready and worker.cell is None and waiting is not None:
                            worker.pipe.send((waiting, commit, self.weights_dir, self.threads))
                            worker.cell, worker.hooks = waiting, hooks(waiting)  # its run opens now
                            waiting = next(source, None)
                    if waiting is None and all(worker.cell is None for worker in workers):
                        return
                    yield from self._collect(workers, commit)
            finally:  # done, SIGTERM, Ctrl-C or a closed generator: no worker outlives the run
                stop_workers(workers)

    def _collect(self, workers: list[Worker], commit: str) -> Iterator[CellResult]:
        """Wait for messages or deaths; forward progress, yield results, drop dead workers."""
        sources: list[Any] = [w.pipe for w in workers] + [w.process.sentinel for w in workers]
        connection.wait(sources, timeout=1.0)
        for worker in list(workers):
            for message in self._drain(worker):
                kind = message[0]
                if kind == "ready":
                    worker.ready = True
                elif kind == "status":
                    worker.hooks.status(message[1], message[2])
                elif kind == "task":
                    worker.hooks.task_ended(message[1], message[2], message[3])
                elif kind == "result":
                    worker.hooks.ended(message[2])
                    worker.cell, worker.hooks = None, CellHooks()
                    yield message[1]
            if not worker.process.is_alive():
                worker.process.join()
                worker.pipe.close()
                workers.remove(worker)
                if not worker.ready:  # it died starting up: a broken environment, not a cell
                    raise UserError(
                        f"a worker process {process_end(worker.process.exitcode)} as it started: "
                        "run with --jobs 1 to see why"
                    )
                if worker.cell is not None:
                    worker.hooks.ended(now_ms())
                    yield dead_worker_result(worker.cell, commit, self.threads, worker.process.exitcode)

    @staticmethod
    def _drain(worker: Worker) -> Iterator[tuple[Any, ...]]:
        try:
            while worker.pipe.poll():
                yield worker.pipe.recv()
        except (EOFError, OSError):  # the worker died; what it sent before is already read
            return


def dead_worker_result(config: CellConfig, commit: str, threads: int, exitcode: int | None) -> CellResult:
    return with_threads(
        CellResult(
            config=config.to_dict(),
            config_hash=config.config_hash,
            status=FAILED,
            error=death_message(exitcode),
            provenance={"commit": commit},
        ),
        threads,
    )


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """While workers run, SIGTERM ends the driver by SystemExit (exit status 143), so that its
    workers are stopped on the way out instead of left running as orphans (a default SIGTERM
    ends the driver at once). Only the main thread can set a handler; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_workers(workers: list[Worker]) -> None:
    """Ask idle workers to leave and end the others (their cells are lost: no record is written,
    their claims are released by the runner); wait until every one is gone."""
    for worker in workers:
        if worker.cell is None and worker.process.is_alive():
            with suppress(OSError):
                worker.pipe.send(None)
        else:
            worker.process.kill()
    deadline = time.monotonic() + 10
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.pipe.close()


# --- Ray ---------------------------------------------------------------------------------------------

_ray_worker_cache: dict[str, TaskCache] = {}  # one per Ray worker process, reused by its later cells


def _run_on_ray(config: CellConfig, commit: str, weights_dir: str, threads: int) -> CellResult:
    cache = _ray_worker_cache.setdefault("cache", TaskCache())
    return run_with_threads(config, commit, cache, Path(weights_dir), threads)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


@dataclass(frozen=True)
class RayExecutor:
    """Each cell a Ray task asking for ``cpus_per_cell`` CPUs and ``gpus_per_cell`` GPUs.

    Connects to ``address`` (``auto``, ``ray://host:10001``, ``host:6379``), else
    ``$RAY_ADDRESS``, else starts a local Ray instance for the run. A Ray session
    that this process already opened (``ray.init`` before the run) is used as it
    is and left open. Every node must have this suite installed and the weights
    files at the same path as the driver.
    """

    weights_dir: Path
    threads: int
    address: str | None = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0

    def run(self, cells: Iterable[CellConfig], commit: str, hooks: HookFactory) -> Iterator[CellResult]:
        """Each cell's hooks are made (its MLflow run opened) when it is submitted; a Ray task reports
        no progress, so its accuracy rows are logged from its record when it ends."""
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            self._connect(ray)
        try:
            remote = ray.remote(_run_on_ray).options(
                num_cpus=self.cpus_per_cell, num_gpus=self.gpus_per_cell, max_retries=1
            )
            limit = self._in_flight_limit(ray)
            source = iter(cells)
            running: dict[Any, tuple[CellConfig, CellHooks]] = {}
            while True:
                while len(running) < limit and (config := next(source, None)) is not None:
                    ref = remote.remote(config, commit, str(self.weights_dir.resolve()), self.threads)
                    running[ref] = (config, hooks(config))
                if not running:
                    return
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    config, cell_hooks = running.pop(ref)
                    cell_hooks.ended(now_ms())
                    yield self._result(ray, ref, config, commit)
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray: Any) -> None:
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        try:
            if address is None:
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as error:  # ConnectionError, ValueError, RuntimeError across Ray versions
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            where = f"Ray cluster at {address!r}" if address else "a local Ray instance"
            raise UserError(f"cannot start or reach {where}: {message}") from None

    def _in_flight_limit(self, ray: Any) -> int:
        """Cells submitted at once: as many as the cluster can run now (claimed just before they start)."""
        resources = ray.cluster_resources()
        limits = [int(resources.get("CPU", 1) // self.cpus_per_cell) if self.cpus_per_cell > 0 else 1]
        if self.gpus_per_cell > 0:
            gpus = resources.get("GPU", 0)
            if gpus < self.gpus_per_cell:
                raise UserError(
                    f"--gpus-per-cell {self.gpus_per_cell:g} but the Ray cluster has {gpus:g} GPUs"
                )
            limits.append(int(gpus // self.gpus_per_cell))
        return max(1, min(limits))

    def _result(self, ray: Any, ref: Any, config: CellConfig, commit: str) -> CellResult:
        """The task's record; a task Ray itself lost (worker or node died) becomes a failed record."""
        try:
            return ray.get(ref)
        except Exception as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return with_threads(
                CellResult(
                    config=config.to_dict(),
                    config_hash=config.config_hash,
                    status=FAILED,
                    error=f"Ray: {type(error).__name__}: {message}",
                    provenance={"commit": commit},
                ),
                self.threads,
            )


# --- Which executor: ``--executor NAME`` -----------------------------------------------------------------


def _cores() -> int:
    return os.cpu_count() or 1


def _make_local(options: ExecutorOptions, cache: TaskCache) -> Executor:
    if options.jobs <= 1:
        return LocalExecutor(cache, options.weights_dir, options.threads or _cores())
    threads = options.threads or max(1, _cores() // options.jobs)
    return ProcessExecutor(options.jobs, options.weights_dir, threads)


def _make_ray(options: ExecutorOptions, cache: TaskCache) -> Executor:
    import_ray()  # fail before any cell with the install hint
    return RayExecutor(
        weights_dir=options.weights_dir,
        threads=options.threads or max(1, int(options.cpus_per_cell)),
        address=options.ray_address,
        cpus_per_cell=options.cpus_per_cell,
        gpus_per_cell=options.gpus_per_cell,
    )


EXECUTORS: dict[str, Callable[[ExecutorOptions, TaskCache], Executor]] = {
    "local": _make_local,
    "ray": _make_ray,
}


def check_options(name: str, options: ExecutorOptions) -> None:
    """Refuse an unknown executor or impossible sizes with a one-line UserError (before any work)."""
    from benchmark.registry import unknown_name_message

    if name not in EXECUTORS:
        raise UserError(unknown_name_message("executor", name, sorted(EXECUTORS)))
    if options.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {options.jobs}")
    if options.threads is not None and options.threads < 1:
        raise UserError(f"--threads must be at least 1, got {options.threads}")
    if options.cpus_per_cell <= 0 or options.gpus_per_cell < 0:
        raise UserError(
            f"--cpus-per-cell must be positive and --gpus-per-cell non-negative, got "
            f"{options.cpus_per_cell:g} and {options.gpus_per_cell:g}"
        )
    if name != "ray" and (options.ray_address or options.gpus_per_cell or options.cpus_per_cell != 1.0):
        raise UserError("--ray-address, --cpus-per-cell and --gpus-per-cell are for --executor ray")
    if name == "ray" and options.jobs != 1:
        raise UserError("--jobs sizes the local process pool; with --executor ray use --cpus-per-cell")


def make_executor(name: str, options: ExecutorOptions, cache: TaskCache) -> Executor:
    check_options(name, options)
    return EXECUTORS[name](options, cache)
