"""``ditcheck audit``: every claim of docs/claims.md, checked on the worst inputs a search can find.

REGISTRY maps each claim id to its ``Claim`` (ordered as in docs/claims.md); ``run_claim`` audits one;
``ditcheck.audit.cli`` runs a selection in worker processes and writes the report folder.
"""

from __future__ import annotations

import importlib

from .registry import KINDS, MODES, Claim, Kind, Mode, budget
from .run import ClaimResult, RateFit, fit_rate, reproducer, run_claim

__all__ = ["REGISTRY", "THEORY_ORDER", "Claim", "ClaimResult", "RateFit", "Kind", "Mode", "KINDS", "MODES",
           "budget", "fit_rate", "reproducer", "run_claim", "registry"]

#: The claim ids of docs/claims.md in its order.
THEORY_ORDER: tuple[str, ...] = (
    "LD1", "LD2", "LD3", "LD4", "LD5", "LD6", "LD7", "LD8", "LD9",
    "AS1", "AS2", "AS3", "AS4", "AS5", "AS6", "AS7",
    "PF1", "RF1",
    "GP1", "GP2", "GP3", "GP4",
    "CF1", "CF2", "CF3", "CF4",
    "RT1", "RT2", "RT3", "RT4",
    "FM1", "FM2", "FM3",
)

_MODULES = ("claims_attention", "claims_diffusion", "claims_samplers", "claims_gp", "claims_flow")


def registry() -> dict[str, Claim]:
    """Every registered claim by id, in docs/claims.md order (each area's module is imported on first use)."""
    claims: dict[str, Claim] = {}
    for name in _MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            continue
        for claim in module.CLAIMS:
            if claim.id in claims:
                raise ValueError(f"claim {claim.id} is registered twice")
            claims[claim.id] = claim
    unknown = set(claims) - set(THEORY_ORDER)
    if unknown:
        raise ValueError(f"claims {sorted(unknown)} are not claim ids of docs/claims.md")
    return {cid: claims[cid] for cid in THEORY_ORDER if cid in claims}


def __getattr__(name: str) -> object:
    if name == "REGISTRY":
        return registry()
    raise AttributeError(name)
