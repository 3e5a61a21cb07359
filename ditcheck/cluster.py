"""Running work on a dask.distributed cluster, shared by ``ditcheck audit`` and ``ditcheck validate --all``.

dask.distributed is an optional extra (``pip install "ditcheck[distributed]"``) imported only here and only when a
scheduler is asked for. A scheduler is named by its address (``tcp://host:8786``: a running cluster, started with
``dask scheduler`` and ``dask worker tcp://host:8786``, whose workers have the same ditcheck installed) or by
``local:N``: a LocalCluster of N single-threaded worker processes on 127.0.0.1, dashboard off, started for the
run and closed at its end (also on Ctrl-C or an error). A LocalCluster started here allows one retry of a task
whose worker died (``distributed.scheduler.allowed-failures`` = 1); an existing scheduler applies its own setting.

This module sits beside :mod:`ditcheck.loader` and :mod:`ditcheck.options` in the layer above ``ditcheck.reference``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ditcheck.reference.errors import InvalidArgumentError

__all__ = ["DISTRIBUTED_INSTALL", "CONNECT_TIMEOUT", "Placement", "DistributedUnavailableError",
           "SchedulerUnavailableError", "parse_scheduler", "import_distributed", "dask_client"]

DISTRIBUTED_INSTALL = 'pip install "ditcheck[distributed]"'
#: seconds to wait for an existing scheduler to answer, and for it to have at least one worker.
CONNECT_TIMEOUT = 30.0


class DistributedUnavailableError(InvalidArgumentError):
    """``--scheduler`` was given but dask.distributed cannot be imported (it is an optional extra)."""

    def __init__(self, reason: str) -> None:
        super().__init__("--scheduler", f"dask.distributed installed: {DISTRIBUTED_INSTALL}", reason)


class SchedulerUnavailableError(InvalidArgumentError):
    """The scheduler given to ``--scheduler`` could not be reached, or has no worker."""


@dataclass(frozen=True)
class Placement:
    """Where work ran: ``engine`` ("in process", "local process pool", "dask.distributed", "dask.distributed
    LocalCluster"), how many workers, and the scheduler's address on a cluster."""

    engine: str
    workers: int
    scheduler: str | None = None

    def describe(self) -> str:
        """One line for a report header: "local process pool, 2 workers", "dask.distributed tcp://..., 4 workers"."""
        plural = "s" if self.workers != 1 else ""
        where = f"{self.engine} {self.scheduler}" if self.scheduler else self.engine
        return f"{where}, {self.workers} worker{plural}"


_LOCAL = re.compile(r"local:(\d+)")
_ADDRESS = re.compile(r"([a-z]+://)?[^\s/:]+(:\d+)?")


def parse_scheduler(spec: str) -> tuple[str, int | None]:
    """``"local:N"`` -> ("local", N); an address (``tcp://host:port``, ``host:port``, ``tls://...``) -> (it, None).
    Anything else is an InvalidArgumentError naming --scheduler."""
    text = spec.strip()
    match = _LOCAL.fullmatch(text)
    if match and int(match.group(1)) >= 1:
        return "local", int(match.group(1))
    if text.startswith("local") or not _ADDRESS.fullmatch(text):
        raise InvalidArgumentError("--scheduler", "a scheduler address such as tcp://127.0.0.1:8786, or local:N "
                                                  "with N >= 1 workers", repr(spec))
    return text, None


def import_distributed() -> Any:
    """The ``distributed`` module, or DistributedUnavailableError saying how to install it."""
    try:
        import distributed  # lazy: dask.distributed is an optional extra
    except ImportError as error:
        raise DistributedUnavailableError(f"it cannot be imported ({error})") from None
    return distributed


@contextlib.contextmanager
def dask_client(spec: str) -> Iterator[tuple[Any, Placement]]:
    """A dask ``Client`` on ``spec`` (an address, or local:N started here and closed on exit) and where it runs.

    Raises DistributedUnavailableError (no dask), SchedulerUnavailableError (unreachable, or no worker joined
    within CONNECT_TIMEOUT), InvalidArgumentError (a malformed spec).
    """
    address, local_workers = parse_scheduler(spec)
    distributed = import_distributed()
    import dask  # lazy: installed with distributed, an optional extra

    if local_workers is not None:
        with dask.config.set({"distributed.scheduler.allowed-failures": 1}):  # one retry after a worker death
            cluster = distributed.LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", scheduler_port=0, dashboard_address=None,
                                               silence_logs=logging.ERROR)
        with cluster, distributed.Client(cluster) as client:
            yield client, Placement("dask.distributed LocalCluster", local_workers, cluster.scheduler_address)
        return
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as error:
        raise SchedulerUnavailableError("--scheduler", "the address of a running dask scheduler",
                                        f"{address!r} ({type(error).__name__}: {error})") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError):
            raise SchedulerUnavailableError("--scheduler", "a scheduler with at least one worker",
                                            f"{address!r}: no worker joined within {CONNECT_TIMEOUT:g} s") from None
        yield client, Placement("dask.distributed", len(client.scheduler_info().get("workers", {})), address)
