"""Where the audit's shards run: here, on a local process pool, or on a dask.distributed cluster.

Every claim is cut into shards by ``ditcheck.audit.run.plan_shards`` (depending on the claim, the mode and the
seed only) and the outcomes are merged in shard order by ``merge_shards``, so the results are the same number
for number wherever and on however many workers the shards ran. Workers rebuild a claim from its id (the
registry by default, ``lookup`` otherwise); torch and BLAS run single-threaded in every shard (``single_threaded``).

dask.distributed is optional and imported only when a scheduler is asked for (``ditcheck.cluster``: an address
``tcp://host:8786`` of a running cluster whose workers have the same ditcheck installed, or ``local:N`` for a
LocalCluster started and closed here). A cluster task that raises is retried once (``retries=1``); a task whose
worker dies is rescheduled by the scheduler (once, on a LocalCluster started here). A shard that still fails is
reported as lost, which makes its claim an ERROR; the rest of the audit finishes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch
from hypothesis.errors import HypothesisDeprecationWarning
from threadpoolctl import threadpool_limits

from ditcheck.cluster import (DISTRIBUTED_INSTALL, DistributedUnavailableError, Placement, SchedulerUnavailableError,
                              dask_client, import_distributed, parse_scheduler)
from ditcheck.reference.errors import InvalidArgumentError

from . import THEORY_ORDER, Claim, ClaimResult, Mode, registry
from .run import Shard, ShardOutcome, merge_shards, plan_shards, run_shard

__all__ = ["Placement", "DistributedUnavailableError", "SchedulerUnavailableError", "DISTRIBUTED_INSTALL",
           "parse_scheduler", "import_distributed", "registered_claim", "run_audit", "shard_task", "single_threaded"]

Progress = Callable[[str, int], None]
ClaimLookup = Callable[[str], Claim]


def registered_claim(claim_id: str) -> Claim:
    """The registered claim with this id (how workers rebuild a claim: shards carry ids, not functions)."""
    return registry()[claim_id]


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """torch's intra-op threads and the BLAS / OpenMP pools numpy loaded (threadpoolctl) set to 1 for the
    duration, as in every worker. Not only for speed (one process per core): a BLAS reduction split over a
    machine-dependent number of threads rounds differently in the last ulp, and a dask worker runs its BLAS
    single-threaded, so without this the same shard gave different bounds here and on a cluster (CF2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


#: Hypothesis's warning when Python's global ``random`` state changed during a draw
_RANDOM_IN_STRATEGY = "Do not use the `random` module inside strategies"


def ignore_random_in_strategies() -> None:
    """Ignore Hypothesis's warning about Python's global ``random`` (that message only) for the rest of this
    process. Run once in every dask worker process, by the worker plugin of ``random_warning_plugin``: a dask worker
    runs tasks beside its asyncio event loop, which draws from Python's global ``random`` (measured: the state
    changes while a task that never touches it sleeps), and Hypothesis, comparing that state around each draw,
    blames our strategies ("do not use the random module inside strategies"). Installed once per process, not per
    task: ``warnings.catch_warnings`` saves and restores the process-wide filter list, so overlapping tasks would
    restore each other's. Never run in this process or a pool process, where the warning stays an error under
    ``-W error`` (tests/test_audit_distributed.py runs the GP strategies so): a strategy that did use ``random``
    would still be caught."""
    warnings.filterwarnings("ignore", message=_RANDOM_IN_STRATEGY, category=HypothesisDeprecationWarning)


def random_warning_plugin() -> Any:
    """A dask WorkerPlugin running ``ignore_random_in_strategies`` at the setup of every worker, those already
    there and those that join or restart later (idempotent: registered again, it is kept as it is)."""
    from distributed.diagnostics.plugin import WorkerPlugin  # lazy: dask.distributed is an optional extra

    class OtherThreadsOwnGlobalRandom(WorkerPlugin):
        idempotent = True
        name = "ditcheck-ignore-random-in-strategies"

        def setup(self, worker: Any) -> None:
            ignore_random_in_strategies()

    return OtherThreadsOwnGlobalRandom()


def shard_task(lookup: ClaimLookup, claim_id: str, shard: Shard, mode: Mode, seed: int) -> ShardOutcome:
    """What a worker (pool process or cluster worker) runs: one shard of the claim ``lookup(claim_id)``."""
    with single_threaded():
        return run_shard(lookup(claim_id), shard, mode, seed)


def _by_cost(claims: Sequence[Claim], mode: Mode, seed: int) -> list[tuple[int, Claim, Shard]]:
    """Every shard with its claim's position, whole-claim ones (rates, observation) first: they are the longest
    single tasks, and starting them last would leave the other workers idle at the end."""
    shards = [(position, claim, shard) for position, claim in enumerate(claims)
              for shard in plan_shards(claim, mode, seed)]
    return sorted(shards, key=lambda item: item[2].part in ("grid", "search"))


def _merge(claims: Sequence[Claim], outcomes: dict[int, list[ShardOutcome]]) -> list[ClaimResult]:
    """Outcomes are keyed by the claim's position (a list may hold two claims with one id: a planted variant)."""
    order = {cid: i for i, cid in enumerate(THEORY_ORDER)}
    results = [merge_shards(claim, outcomes[position]) for position, claim in enumerate(claims)]
    return sorted(results, key=lambda r: order.get(r.id, len(order)))


def _in_process(claims: Sequence[Claim], mode: Mode, seed: int, progress: Progress) -> list[ClaimResult]:
    outcomes: dict[int, list[ShardOutcome]] = {}
    with single_threaded():
        for position, claim in enumerate(claims):
            outcomes[position] = [run_shard(claim, shard, mode, seed, advance=lambda n, cid=claim.id: progress(cid, n))
                                  for shard in plan_shards(claim, mode, seed)]
    return _merge(claims, outcomes)


def _on_pool(claims: Sequence[Claim], mode: Mode, seed: int, workers: int, lookup: ClaimLookup,
             progress: Progress) -> list[ClaimResult]:
    outcomes: dict[int, list[ShardOutcome]] = {position: [] for position in range(len(claims))}
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context)
    try:
        futures: dict[Future[ShardOutcome], tuple[int, Shard]] = {
            pool.submit(shard_task, lookup, claim.id, shard, mode, seed): (position, shard)
            for position, claim, shard in _by_cost(claims, mode, seed)}
        for future in as_completed(futures):
            position, shard = futures[future]
            try:
                outcome = future.result()
            except BrokenProcessPool as error:  # a worker process died: what it and the queue held is lost
                outcome = ShardOutcome(shard, lost=f"a worker process died ({error})")
            except Exception as error:  # noqa: BLE001 - e.g. an outcome that cannot be unpickled
                outcome = ShardOutcome(shard, lost=f"{type(error).__name__}: {error}")
            outcomes[position].append(outcome)
            progress(shard.claim_id, shard.steps)
    except BaseException:  # Ctrl-C or an error here: drop what has not started, do not wait for the whole queue
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return _merge(claims, outcomes)


def _on_cluster(client: Any, claims: Sequence[Claim], mode: Mode, seed: int, lookup: ClaimLookup,
                progress: Progress) -> list[ClaimResult]:
    completed = import_distributed().as_completed
    outcomes: dict[int, list[ShardOutcome]] = {position: [] for position in range(len(claims))}
    run_id = uuid.uuid4().hex[:8]  # a fresh key per run: a second audit on the same cluster must not reuse results
    futures: dict[Any, tuple[int, Shard]] = {}
    client.register_plugin(random_warning_plugin())  # before any task: every worker ignores that one warning
    try:
        for position, claim, shard in _by_cost(claims, mode, seed):
            future = client.submit(shard_task, lookup, claim.id, shard, mode, seed, retries=1, pure=False,
                                   key=f"ditcheck-audit-{position}-{claim.id}-{shard.index}-{run_id}")
            futures[future] = (position, shard)
        for future in completed(list(futures)):
            position, shard = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001 - raised twice, worker died (KilledWorker), cancelled
                outcome = ShardOutcome(shard, lost=f"{type(error).__name__}: {error}")
            outcomes[position].append(outcome)
            progress(shard.claim_id, shard.steps)
    finally:  # nothing of this run keeps running on a shared cluster after it ends (Ctrl-C, errors)
        client.cancel(list(futures), force=True)
    return _merge(claims, outcomes)


def run_audit(claims: Sequence[Claim], mode: Mode, seed: int, *, workers: int = 1, scheduler: str | None = None,
              lookup: ClaimLookup | None = None, progress: Progress = lambda claim_id, n: None,
              on_placement: Callable[[Placement], None] = lambda placement: None
              ) -> tuple[list[ClaimResult], Placement]:
    """Run ``claims`` shard by shard; return their results in docs/claims.md order and where they ran.

    ``scheduler`` None: here (``workers`` 1) or on a spawned process pool of ``workers`` processes; otherwise a
    dask.distributed scheduler address or ``local:N``. ``lookup`` rebuilds a claim from its id in a worker
    (default: the registry, so off this process only registered claims can run; here, with one worker and no
    scheduler, the Claim objects themselves run, so modified claims work). ``progress(claim_id, steps)`` is
    called as work completes; ``on_placement`` once the workers are known (before any shard runs).
    Raises DistributedUnavailableError (no dask), SchedulerUnavailableError, InvalidArgumentError.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgumentError("workers", "an integer >= 1", repr(workers))
    if lookup is None and (scheduler is not None or workers > 1):
        registered = registry()
        foreign = [c.id for c in claims if registered.get(c.id) is not c]
        if foreign:
            raise InvalidArgumentError("claims", "registered claims (workers rebuild them from the registry), or a "
                                                 "lookup", f"unregistered {foreign}")
    lookup = lookup or registered_claim
    if scheduler is not None:
        with dask_client(scheduler) as (client, placement):
            on_placement(placement)
            return _on_cluster(client, claims, mode, seed, lookup, progress), placement
    if workers == 1:
        placement = Placement("in process", 1)
        on_placement(placement)
        return _in_process(claims, mode, seed, progress), placement
    placement = Placement("local process pool", workers)
    on_placement(placement)
    return _on_pool(claims, mode, seed, workers, lookup, progress), placement
