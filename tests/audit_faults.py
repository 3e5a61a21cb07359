"""Claim lookups for the distributed audit tests (importable by spawned workers: tests/ is on their sys.path).

``lookup_killing_as4``: AS4 as registered, except that measuring its first grid case kills the worker process
running it (os._exit), so its grid shard is lost however often it is retried; every other claim is the
registered one.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ditcheck.audit import Claim, registry
from ditcheck.properties.measurement import Measurement

KILLED_CLAIM = "AS4"


def _killing_measure(case: Any) -> Measurement:
    claim = registry()[KILLED_CLAIM]
    assert claim.measure is not None
    if case == claim.grid("quick")[0]:
        os._exit(17)  # the worker process dies mid-task, as on an out-of-memory kill
    return claim.measure(case)


def lookup_killing_as4(claim_id: str) -> Claim:
    claim = registry()[claim_id]
    if claim_id == KILLED_CLAIM:
        return dataclasses.replace(claim, measure=_killing_measure)
    return claim
