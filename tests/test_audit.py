"""ditcheck audit: the registry, the worst-case search, verdicts, rate fits, determinism, the report and the CLI."""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from ditcheck import bounds
from ditcheck.audit import THEORY_ORDER, Claim, budget, fit_rate, registry, run_claim
from ditcheck.audit.cli import audit, select_claims
from ditcheck.audit.report import write_report
from ditcheck.cli import main
from ditcheck.properties import fast_attention
from ditcheck.properties.measurement import Measurement, RateSeries

# one claim of every kind the registry holds, cheap in quick mode
KIND_SAMPLE = ("AS2", "AS4", "AS6", "PF1", "GP3")


def half_as2_bound(eps: float, v_inf: float) -> float:
    return 0.5 * bounds.as2_output_bound(eps, v_inf)


def planted_as2() -> Claim:
    """AS2 held to half its true bound: the search must find inputs beyond it."""
    claim = registry()["AS2"]
    return dataclasses.replace(claim, measure=functools.partial(fast_attention.measure_poly_attention_output,
                                                                bound=half_as2_bound))


def test_registry_covers_every_theory_id() -> None:
    claims = registry()
    assert list(claims) == list(THEORY_ORDER)
    for claim in claims.values():
        assert claim.statement and claim.source, claim.id
        if claim.kind == "not checkable":
            assert len(claim.reason) > 20, claim.id
        if claim.kind in ("exact", "bound"):
            assert claim.bound, f"{claim.id} names what it is held to"


def test_planted_half_bound_is_violated_with_a_reproducer() -> None:
    result = run_claim(planted_as2(), "quick", 0)
    assert result.verdict == "VIOLATED" and result.failed
    assert result.max_ratio is not None and 1 < result.max_ratio <= 2.0 + 1e-9  # half the bound: at most twice it
    assert result.reproducer and "PolyAttentionCase(" in result.reproducer
    namespace: dict[str, object] = {}
    exec(result.reproducer.replace("print(", "_ = ("), namespace)  # noqa: S102 - the reproducer is ours
    rerun = namespace["m"]
    assert isinstance(rerun, Measurement)
    assert rerun.observed == result.worst_observed  # the same input, the same number
    assert rerun.limit == pytest.approx(2 * result.worst_limit, rel=1e-12)
    assert rerun.ratio <= 1  # re-run against the true bound


def test_true_as2_bound_holds() -> None:
    result = run_claim(registry()["AS2"], "quick", 0)
    assert not result.failed and result.max_ratio is not None and result.max_ratio <= 1
    assert set(result.forms) == {"per column", "paper 2 eps"}


def _exponent_claim(claimed: float) -> Claim:
    def rates(mode: str, seed: int) -> list[RateSeries]:
        rng = np.random.default_rng(seed)
        x = np.repeat([1.0, 2.0, 4.0, 8.0, 16.0], 3)
        return [RateSeries("synthetic", x, 3.0 * x**-0.5 * np.exp(0.02 * rng.standard_normal(x.size)),
                           claimed, "equal", 0.05, "m", "error")]

    return Claim(id="PF1", statement="synthetic m^-1/2", source="test", kind="rate", rates=rates)


def test_fit_recovers_an_exact_power_law() -> None:
    x = np.array([1.0, 2.0, 4.0, 8.0])
    fit = fit_rate(RateSeries("exact", x, 5 * x**1.5, 1.5, "equal", 0.0, "x", "y"))
    assert fit.exponent == pytest.approx(1.5, abs=1e-12) and fit.consistent
    assert fit.high - fit.low < 1e-9


def test_planted_wrong_exponent_is_inconsistent() -> None:
    assert run_claim(_exponent_claim(-0.5), "quick", 0).verdict == "consistent"
    wrong = run_claim(_exponent_claim(-1.0), "quick", 0)
    assert wrong.verdict == "inconsistent" and not wrong.failed  # reported, not a failed bound
    registered = registry()["PF1"]
    planted = dataclasses.replace(registered, rates=lambda mode, seed: [
        dataclasses.replace(s, claimed=2 * s.claimed - 1) for s in registered.rates(mode, seed)])  # type: ignore[misc]
    assert run_claim(planted, "quick", 0).verdict.endswith("inconsistent")


@pytest.mark.parametrize("relation, claimed, consistent", [
    ("at least", 0.5, True), ("at least", 1.5, False), ("at most", 1.5, True), ("at most", 0.5, False)])
def test_big_o_relations(relation: str, claimed: float, consistent: bool) -> None:
    x = np.repeat([0.01, 0.02, 0.04, 0.08], 2)
    y = x * np.array([1.0, 1.01] * 4)
    assert fit_rate(RateSeries("t0", x, y, claimed, relation, 0.05, "t0", "TV")).consistent is consistent  # type: ignore[arg-type]


@pytest.mark.parametrize("dof", [1, 2, 5, 30])
def test_student_t_quantile_matches_scipy(dof: int) -> None:
    from ditcheck.audit.run import student_t_quantile

    assert student_t_quantile(0.975, dof) == pytest.approx(scipy.stats.t.ppf(0.975, dof), rel=1e-9)


def test_a_measurement_that_raises_is_an_error_not_a_pass() -> None:
    def broken(case: object) -> Measurement:
        raise RuntimeError("planted")

    result = run_claim(dataclasses.replace(registry()["AS2"], measure=broken), "quick", 0)
    assert result.verdict == "ERROR" and result.failed and "planted" in result.errors[0]


def test_results_do_not_depend_on_imports_or_workers() -> None:
    """Same seed and mode: identical numbers in this process (pytest's imports) and in two spawned workers."""
    claims = [registry()[cid] for cid in KIND_SAMPLE]
    here = audit(claims, "quick", 7, workers=1)
    there = audit(claims, "quick", 7, workers=2)
    assert [_stable(r) for r in here] == [_stable(r) for r in there]


def _stable(result: object) -> dict[str, object]:
    data = dataclasses.asdict(result)  # type: ignore[call-overload]
    data.pop("seconds")
    return data


def test_report_files_are_valid_and_complete(tmp_path: Path) -> None:
    results = audit([registry()[cid] for cid in KIND_SAMPLE] + [planted_as2()], "quick", 0)
    written = write_report(results, tmp_path, {"mode": "quick", "seed": 0})
    document = json.loads((tmp_path / "report.json").read_text())
    assert [c["id"] for c in document["claims"]] == [r.id for r in results]
    assert document["failed"] == ["AS2"]  # the planted one
    for claim in document["claims"]:
        assert claim["verdict"] and claim["summary"] and claim["statement"] and claim["source"]
    md = (tmp_path / "report.md").read_text()
    for result in results:
        assert f"## {result.id} ({result.kind}): {result.verdict}" in md
    assert "Reproducer" in md and "How to read the verdicts" in md
    pngs = [p for name, p in written.items() if name.endswith(".png")]
    assert {p.stem for p in pngs} == {r.id for r in results if r.kind in ("bound", "exact", "rate")}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    as6 = next(c for c in document["claims"] if c["id"] == "AS6")
    assert as6["verdict"] == "not checkable" and as6["table"]


def test_cli_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--quick", "--claims", "AS4,as6", "--workers", "1", "--out", str(tmp_path / "ok")]) == 0
    out = capsys.readouterr().out
    assert "AS4" in out and "AS6" in out and "not checkable" in out
    planted = {**registry(), "AS2": planted_as2()}
    monkeypatch.setattr("ditcheck.audit.cli.registry", lambda: planted)
    assert main(["audit", "--quick", "--claims", "AS2", "--workers", "1", "--out", str(tmp_path / "bad")]) == 1
    out = capsys.readouterr().out
    assert "VIOLATED" in out and "reproducer" in out and "PolyAttentionCase(" in out
    assert main(["audit", "--claims", "AS9"]) == 2
    assert "unknown: AS9" in capsys.readouterr().out
    assert main(["audit", "--workers", "0"]) == 2
    (tmp_path / "file").write_text("")
    assert main(["audit", "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "argument --out" in capsys.readouterr().out


def test_select_claims_keeps_theory_order() -> None:
    claims = registry()
    assert [c.id for c in select_claims("as2, LD1", claims)] == ["LD1", "AS2"]


def test_cli_list_names_every_claim(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(cid in out for cid in THEORY_ORDER)


@pytest.mark.slow
def test_quick_audit_is_stable_across_two_runs(tmp_path: Path) -> None:
    """The README's main command: two runs with one seed give the same table and the same report numbers."""
    outputs = []
    for run in ("a", "b"):
        done = subprocess.run([sys.executable, "-m", "ditcheck", "audit", "--quick", "--seed", "1", "--out",
                               str(tmp_path / run)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        summary = next(i for i, line in enumerate(lines) if line.startswith(tuple("0123456789")))
        table = lines[:summary]  # the summary line names the (different) report folder and may wrap
        claims = json.loads((tmp_path / run / "report.json").read_text())["claims"]
        outputs.append((table, [{k: v for k, v in c.items() if k != "seconds"} for c in claims]))
    assert outputs[0] == outputs[1]


def test_claim_requires_what_its_kind_needs() -> None:
    with pytest.raises(ValueError, match="missing measure"):
        Claim(id="AS2", statement="s", source="s", kind="bound", strategy=lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="kind must be one of"):
        Claim(id="AS2", statement="s", source="s", kind="lemma")  # type: ignore[arg-type]
    assert budget(1, 2, 3)["default"] == 2


# --- bounds off by a factor 1.3: caught where the bound is attained, and said not to be where it is loose ----------

def test_as2_bound_too_small_by_1_3_is_violated() -> None:
    """AS2 is attained to 1.4% by the balanced input: a bound 1.3x too small (eps/(1-eps)/1.3) is VIOLATED."""
    claim = dataclasses.replace(registry()["AS2"], measure=functools.partial(
        fast_attention.measure_poly_attention_output, bound=lambda eps, v: bounds.as2_output_bound(eps, v) / 1.3))
    result = run_claim(claim, "quick", 0)
    assert result.verdict == "VIOLATED" and result.max_ratio > 1.2


def test_gp2_rate_too_fast_by_1_3_is_violated() -> None:
    """GP2's (1 - 1/kappa)^K is attained at K = 1: a contraction 1.3x too strong per step is VIOLATED."""
    from ditcheck.properties import gp as GP

    claim = dataclasses.replace(registry()["GP2"], measure=functools.partial(
        GP.measure_gp2_unrolled, rate=lambda kappa, k: (1 - 1.3 / np.asarray(kappa)) ** k))
    assert run_claim(claim, "quick", 0).verdict == "VIOLATED"


def test_ld5_bound_too_small_by_1_3_is_not_caught_because_the_bound_is_loose() -> None:
    """LD5's worst observed/bound is 0.37 (the constant e could be about 1): e/1.3 is still a true bound, so the audit
    must (and does) keep saying it holds; the looseness is what the verdict 'loose by 2.7x' reports."""
    from ditcheck.properties import samplers as smp

    claim = dataclasses.replace(registry()["LD5"], measure=functools.partial(
        smp.measure_ld5_bound, bound=lambda T0, mu: bounds.ld5_bound(T0, mu) / 1.3))  # noqa: N803
    result = run_claim(claim, "quick", 0)
    assert not result.failed and 0.45 < result.max_ratio < 0.5


#: scipy is in the test extra only: a plain ``pip install ditcheck`` has no scipy, and the audit must still run
_WITHOUT_SCIPY = """
import sys
class _NoScipy:
    def find_spec(self, name, path=None, target=None):
        if name == "scipy" or name.startswith("scipy."):
            raise ModuleNotFoundError("No module named 'scipy' (blocked by the test)", name="scipy")
sys.meta_path.insert(0, _NoScipy())
from ditcheck.audit import registry
from ditcheck.audit import claims_diffusion
from ditcheck.properties import early_stopping, sampler_rates
claims = registry()
print(len(claims), early_stopping.early_stopping_tv(claims_diffusion.CF3_JUMP_TARGETS[1], 1e-3),
      sampler_rates.isotropic_gaussian_tv(1.01, 1.0, 1024))
"""


def test_every_claim_imports_and_computes_without_scipy() -> None:
    """CF3's quadrature and RT4's chi-square CDFs need no scipy: the registry loads and both compute with scipy blocked."""
    done = subprocess.run([sys.executable, "-c", _WITHOUT_SCIPY], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    count, tv, chi2_tv = done.stdout.split()
    assert int(count) == len(registry()) and 0 < float(tv) < 1 and 0 < float(chi2_tv) < 1
