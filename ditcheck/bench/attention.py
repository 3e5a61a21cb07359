"""``ditcheck bench attention``: exact (SDPA) vs certified polynomial (poly) vs FAVOR+ (rf) attention.

For each L, on the same inputs in one run: median time and max error of every backend
(error against a float64 SDPA on 256 sampled query rows), poly's certified bound, the
fitted log-log slope of time vs L (over L >= 4096 when measured, else all), the measured
crossover L (poly faster than exact), poly's achieved GFLOP/s next to this machine's
measured float32 matmul peak, and the crossover map: the L at which poly starts to beat
exact for D in {4, 8, 16}, R in {0.25, 0.5, 1, 2}, eps in {1e-3, 1e-6}, computed from the
per-token costs measured in this run. Inputs: rows of q and k have norm sqrt(R/scale) in
random directions, so the Cauchy-Schwarz logit radius is exactly R; v is Gaussian.
GFLOP/s counts the useful flops of the method ((Lq + Lk) r feature products and
2 (Lq + Lk) r (Dv + 1) for the two contractions).
``--peer`` adds the uncertified Taylor-2 features of Based, poly at the degree and FAVOR+ at the
feature count reaching the same measured error.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ditcheck.bounds import UnreachableAccuracyError, feature_rank, minimal_degree
from ditcheck.fast_attention.attention import DEFAULT_MAX_RANK, attention, certified_radius, poly_attention, predicted_cost
from ditcheck.fast_attention.polynomial import exp_approximation
from ditcheck.fast_attention.random_features import favor_attention
from ditcheck.options import add_list_option, add_seed_option

from . import time_call

__all__ = ["Row", "CrossoverRow", "PeerRow", "taylor2_features", "taylor2_attention", "bench_peer", "inputs", "matmul_peak", "bench_attention", "fit_slope", "crossover_length",
           "per_token_costs", "crossover_map", "add_arguments", "run"]

HELP = "exact (SDPA) vs certified polynomial vs FAVOR+ attention: time, error, slope, crossover, GFLOP/s"

DEFAULT_LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
QUICK_LENGTHS = (256, 512, 1024, 2048, 4096)
#: exact softmax attention, certified polynomial features (AS3/AS4), random features (Performer).
BACKENDS = ("exact", "poly", "rf")
_ERROR_ROWS = 256


@dataclass(frozen=True)
class Row:
    """One backend at one L: median seconds, max error vs float64 on sampled rows, and poly's certificate."""

    backend: str
    length: int
    seconds: float
    max_error: float
    bound: float = math.nan
    rounding: float = math.nan
    degree: int | None = None
    rank: int | None = None
    gflops: float = math.nan


@dataclass(frozen=True)
class CrossoverRow:
    """Predicted L where poly starts to beat exact (None: never, with the reason in ``note``)."""

    dim: int
    radius: float
    eps: float
    degree: int | None
    rank: int | None
    length: float | None
    note: str = ""


def inputs(length: int, dim: int, heads: int, radius: float, *, value_dim: int | None = None, seed: int = 0,
           dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [1, H, L, D] with Cauchy-Schwarz logit radius exactly ``radius`` at scale 1/sqrt(D)."""
    g = torch.Generator().manual_seed(seed)
    norm = math.sqrt(radius * math.sqrt(dim))
    q, k = (torch.randn(1, heads, length, dim, generator=g, dtype=torch.float64) for _ in range(2))
    q = q / q.norm(dim=-1, keepdim=True) * norm
    k = k / k.norm(dim=-1, keepdim=True) * norm
    v = torch.randn(1, heads, length, value_dim or dim, generator=g, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def matmul_peak(size: int = 2048, repeats: int = 5, clock: Callable[[], float] = time.perf_counter) -> float:
    """Measured float32 GFLOP/s of one size x size x size matmul (median, timed by ``clock``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds, _ = time_call(lambda: a @ b, repeats, clock)
    return 2 * size**3 / seconds / 1e9


def poly_flops(length: int, heads: int, rank: int, value_dim: int) -> float:
    """Useful flops of poly attention with Lq = Lk = L (``attention.predicted_cost``): features plus the two contractions."""
    return heads * predicted_cost("poly", length, length, value_dim, value_dim, rank)


def bench_attention(lengths: Sequence[int], *, dim: int = 8, heads: int = 4, radius: float = 0.5, eps: float = 1e-4,
                    repeats: int = 3, num_features: int = 256, backends: Sequence[str] = BACKENDS,
                    seed: int = 0, dtype: torch.dtype = torch.float32, chunk_size: int | None = None,
                    verbose: bool = False, clock: Callable[[], float] = time.perf_counter) -> list[Row]:
    """Time and error of each backend on the same inputs for every L (side by side in one run)."""
    rows = []
    for length in lengths:
        q, k, v = inputs(length, dim, heads, radius, seed=seed, dtype=dtype)
        picked = torch.randperm(length, generator=torch.Generator().manual_seed(seed))[:_ERROR_ROWS]
        truth = torch.nn.functional.scaled_dot_product_attention(q[:, :, picked].double(), k.double(), v.double(),
                                                                 scale=1 / math.sqrt(dim))
        for backend in backends:
            calls = repeats if backend != "exact" or length <= 8192 else 1
            seconds, result = time_call(lambda: attention(q, k, v, backend=backend, eps=eps,
                                                          num_features=num_features, seed=seed,
                                                          chunk_size=chunk_size), calls, clock)
            error = float((result.output[:, :, picked].double() - truth).abs().max())
            if backend == "poly":
                row = Row(backend, length, seconds, error, result.bound, result.rounding, result.degree, result.rank,
                          poly_flops(length, heads, result.rank, v.shape[-1]) / seconds / 1e9)
            else:
                row = Row(backend, length, seconds, error)
            rows.append(row)
            if verbose:
                print(f"  L={length:>6} {backend:>5}: {seconds * 1e3:10.2f} ms, max error {error:.2e}", flush=True)
    return rows


def fit_slope(rows: Sequence[Row], backend: str, min_length: int = 4096) -> float:
    """Least-squares slope of log(time) vs log(L) over L >= min_length (all L if fewer than two qualify)."""
    points = [(r.length, r.seconds) for r in rows if r.backend == backend]
    if len([p for p in points if p[0] >= min_length]) >= 2:
        points = [p for p in points if p[0] >= min_length]
    if len(points) < 2:
        return math.nan
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def crossover_length(rows: Sequence[Row]) -> float | None:
    """Smallest L where poly beats exact, log-log interpolated between measured L (None if never measured)."""
    times = {b: {r.length: r.seconds for r in rows if r.backend == b} for b in ("exact", "poly")}
    lengths = sorted(set(times["exact"]) & set(times["poly"]))
    ratios = [math.log(times["poly"][n] / times["exact"][n]) for n in lengths]
    for i, (n, ratio) in enumerate(zip(lengths, ratios)):
        if ratio < 0:
            if i == 0:
                return float(n)
            n0, r0 = lengths[i - 1], ratios[i - 1]
            t = r0 / (r0 - ratio)
            return float(math.exp(math.log(n0) + t * (math.log(n) - math.log(n0))))
    return None


def per_token_costs(rows: Sequence[Row], dim: int, heads: int) -> dict[str, float]:
    """Seconds per (query, key) pair per head for exact, per (token, feature) per head for poly, at the largest L."""
    exact = max((r for r in rows if r.backend == "exact"), key=lambda r: r.length)
    poly = max((r for r in rows if r.backend == "poly"), key=lambda r: r.length)
    return {"exact": exact.seconds / (heads * exact.length**2), "feature": poly.seconds / (heads * 2 * poly.length * poly.rank),
            "dim": float(dim)}


def crossover_map(per_token: dict[str, float], dims: Sequence[int] = (4, 8, 16),
                  radii: Sequence[float] = (0.25, 0.5, 1.0, 2.0), eps_levels: Sequence[float] = (1e-3, 1e-6),
                  max_rank: int | None = None) -> list[CrossoverRow]:
    """L* = 2 r c_feature / c_pair where poly (2 L r c_feature per head) beats exact (L^2 c_pair per head).

    Both measured costs are carried from the measured D0 to D (Dv = D) by the flop model
    ``attention.predicted_cost``: c_pair by (4 D + EXP_FLOPS) / (4 D0 + EXP_FLOPS), c_feature
    by (2 D + 3) / (2 D0 + 3). "never" when the degree is not certifiable or the rank exceeds
    ``max_rank``.
    """
    max_rank = DEFAULT_MAX_RANK if max_rank is None else max_rank
    measured_dim = int(per_token.get("dim", 8.0))
    table = []
    for dim in dims:
        pair = per_token["exact"] * predicted_cost("exact", 1, 1, dim, dim) \
            / predicted_cost("exact", 1, 1, measured_dim, measured_dim)
        feature = per_token["feature"] * predicted_cost("poly", 1, 1, dim, dim, 1) \
            / predicted_cost("poly", 1, 1, measured_dim, measured_dim, 1)
        for radius in radii:
            for eps in eps_levels:
                try:
                    degree = minimal_degree(radius, eps)
                except UnreachableAccuracyError:
                    table.append(CrossoverRow(dim, radius, eps, None, None, None, "never: eps not certifiable"))
                    continue
                rank = feature_rank(dim, degree)
                if rank > max_rank:
                    would_be = 2 * rank * feature / pair
                    table.append(CrossoverRow(dim, radius, eps, degree, rank, None,
                                              f"never: rank > max_rank {max_rank} (else L ~ {would_be:,.0f})"))
                    continue
                table.append(CrossoverRow(dim, radius, eps, degree, rank, 2 * rank * feature / pair))
    return table


def taylor2_features(x: torch.Tensor) -> torch.Tensor:
    """The Taylor-2 feature map of Based (Arora et al. 2024), from its formula: [..., L, 1 + D + D^2].

    phi(x) = [1, x / D^(1/4), vec(x x^T) / (sqrt(2) sqrt(D))], so phi(q) . phi(k) = 1 + s + s^2/2 with
    s = q.k / sqrt(D): the degree-2 Taylor polynomial of exp(s), uncertified (no error bound, no radius).
    """
    dim = x.shape[-1]
    outer = (x[..., :, None] * x[..., None, :]).flatten(-2)
    return torch.cat([torch.ones_like(x[..., :1]), x / dim**0.25, outer / (math.sqrt(2) * math.sqrt(dim))], dim=-1)


def taylor2_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Linear attention with Based's Taylor-2 features at scale 1/sqrt(D): phi(Q) (phi(K)^T [V, 1]), normalised.

    The bench's uncertified peer (not part of ditcheck.fast_attention): same contraction order as poly.
    """
    values = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    o = taylor2_features(q) @ (taylor2_features(k).mT @ values)
    return o[..., :-1] / o[..., -1:]


@dataclass(frozen=True)
class PeerRow:
    """One method at one L in the equal-error comparison: what it used (degree, rank or feature count), time, error."""

    method: str
    setting: str
    seconds: float
    max_error: float


def bench_peer(length: int, *, dim: int = 8, heads: int = 4, radius: float = 0.5, repeats: int = 3, seed: int = 0,
               dtype: torch.dtype = torch.float32, max_features: int = 1 << 14,
               clock: Callable[[], float] = time.perf_counter) -> list[PeerRow]:
    """Taylor-2 (Based) vs poly at the lowest degree whose measured error is <= Taylor-2's vs FAVOR+ at the
    smallest power-of-two feature count that reaches it (or ``max_features``), on the same inputs."""
    q, k, v = inputs(length, dim, heads, radius, seed=seed, dtype=dtype)
    picked = torch.randperm(length, generator=torch.Generator().manual_seed(seed))[:_ERROR_ROWS]
    scale = 1 / math.sqrt(dim)
    truth = torch.nn.functional.scaled_dot_product_attention(q[:, :, picked].double(), k.double(), v.double(),
                                                             scale=scale)

    def error(output: torch.Tensor) -> float:
        return float((output[:, :, picked].double() - truth).abs().max())

    seconds, out = time_call(lambda: taylor2_attention(q, k, v), repeats, clock)
    rows = [PeerRow("Taylor-2 (Based, uncertified)", f"rank {1 + dim + dim * dim}", seconds, error(out))]
    target = rows[0].max_error
    grid = certified_radius(radius)
    for degree in range(1, 12):
        approximation = exp_approximation(grid, degree)
        seconds, out = time_call(lambda: poly_attention(q, k, v, approximation, scale), repeats, clock)
        if error(out) <= target or degree == 11:
            rows.append(PeerRow("poly (certified)", f"g = {degree}, rank {feature_rank(dim, degree)}, "
                                f"certified eps {approximation.eps:.1e}", seconds, error(out)))
            break
    features = dim
    while True:
        seconds, (out, _) = time_call(lambda: favor_attention(q, k, v, num_features=features, seed=seed, scale=scale),
                                      repeats, clock)
        if error(out) <= target or features >= max_features:
            rows.append(PeerRow("FAVOR+ (Performer)", f"{features} features", seconds, error(out)))
            return rows
        features *= 2


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 10 else f"{seconds * 1e3:.1f} ms"


def _print_report(rows: Sequence[Row], peak: float, costs: dict[str, float] | None, table: Sequence[CrossoverRow],
                  title: str) -> None:
    console = Console(width=max(Console().width, 130))
    lengths = sorted({r.length for r in rows})
    backends = [b for b in ("exact", "poly", "rf") if any(r.backend == b for r in rows)]
    main = Table(title=title)
    main.add_column("L", justify="right")
    for b in backends:
        main.add_column(f"{b} time", justify="right")
        main.add_column(f"{b} max err", justify="right")
    if "poly" in backends:
        for column in ("poly bound", "g / rank", "poly GFLOP/s", "exact / poly"):
            main.add_column(column, justify="right")
    by = {(r.backend, r.length): r for r in rows}
    for n in lengths:
        cells = [str(n)]
        for b in backends:
            r = by.get((b, n))
            cells += [_duration(r.seconds), f"{r.max_error:.1e}"] if r else ["", ""]
        if "poly" in backends:
            p, e = by.get(("poly", n)), by.get(("exact", n))
            cells += [f"{p.bound:.1e}" if p else "", f"{p.degree} / {p.rank}" if p else "",
                      f"{p.gflops:.1f}" if p else "", f"{e.seconds / p.seconds:.1f}x" if p and e else ""]
        main.add_row(*cells)
    console.print(main)
    slopes = ", ".join(f"{b} {fit_slope(rows, b):.2f}" for b in backends)
    print(f"log-log slope of time vs L (L >= 4096 where measured): {slopes}")
    if "poly" in backends and "exact" in backends:
        crossover = crossover_length(rows)
        print("measured crossover (poly faster than exact): "
              + (f"L ~ {crossover:.0f}" if crossover else "not within the measured L"))
    if "poly" in backends:
        best = max(r.gflops for r in rows if r.backend == "poly")
        print(f"float32 matmul peak (2048^3, measured now): {peak:.1f} GFLOP/s; poly best {best:.1f} GFLOP/s "
              f"= {100 * best / peak:.0f}% of peak (useful flops only)")
    if table:
        cmap = Table(title="crossover map: L where poly starts to beat exact (from this run's per-token costs)")
        for column in ("D", "R", "eps", "degree", "rank", "crossover L"):
            cmap.add_column(column, justify="right")
        for t in table:
            cmap.add_row(str(t.dim), f"{t.radius:g}", f"{t.eps:.0e}", str(t.degree or ""), str(t.rank or ""),
                         f"{t.length:,.0f}" if t.length is not None else t.note)
        console.print(cmap)
        print(f"per-token costs: exact {costs['exact'] * 1e9:.3f} ns per (query, key) pair per head; "
              f"poly {costs['feature'] * 1e9:.3f} ns per (token, feature) per head")
    print("times are medians of timed calls after a warm-up (exact above L = 8192: one call); errors are "
          "max |output - float64 SDPA| on 256 sampled query rows; poly bound = eps/(1-eps)||V||_inf (AS2).")


def _plot(rows: Sequence[Row], path: str) -> None:
    # lazy: matplotlib takes about 1 s to import, paid only when a figure is written
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    fig, ax = plt.subplots(figsize=(6, 4))
    for b in ("exact", "poly", "rf"):
        points = sorted((r.length, r.seconds) for r in rows if r.backend == b)
        if points:
            ax.loglog(*zip(*points), marker="o", label=f"{b} (slope {fit_slope(rows, b):.2f})")
    ax.set_xlabel("L (tokens)")
    ax.set_ylabel("seconds")
    ax.set_title("attention time vs L")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_list_option(parser, "--lengths", kind=int, metavar="L,L",
                    help="token counts L (default 1024..65536 by doubling; --quick: 256..4096)")
    parser.add_argument("--quick", action="store_true", help="L up to 4096 only")
    parser.add_argument("--dim", type=int, default=8, help="head dim D (default 8)")
    parser.add_argument("--heads", type=int, default=4, help="heads H (default 4)")
    parser.add_argument("--radius", type=float, default=0.5, help="logit radius R of the inputs (default 0.5)")
    parser.add_argument("--eps", type=float, default=1e-4, help="poly's certified relative error (default 1e-4)")
    parser.add_argument("--num-features", type=int, default=256, help="rf random features (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (default 3)")
    add_list_option(parser, "--backends", choices=BACKENDS, default=list(BACKENDS), metavar="NAME,NAME",
                    help="backends to time (default all)")
    add_seed_option(parser, "the inputs and of rf")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="poly's token chunk (default: sized to the L2 cache)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall",
                        help="wall time (default) or the CPU time of the main thread (needs --threads 1): on a "
                             "loaded machine it leaves out the time other processes hold the core")
    parser.add_argument("--plot", metavar="PATH", default=None, help="save a PNG of time vs L")
    parser.add_argument("--no-map", action="store_true", help="skip the crossover map")
    parser.add_argument("--peer", action="store_true",
                        help="also compare, at the largest L, Based's uncertified Taylor-2 features with poly and "
                             "FAVOR+ at equal measured error")


def run(args: argparse.Namespace) -> int:
    lengths = args.lengths or (QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS)
    backends = tuple(args.backends)
    unknown = set(backends) - {"exact", "poly", "rf"}
    if unknown:
        raise SystemExit(f"unknown backend(s) {sorted(unknown)}: choose from exact, poly, rf")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and torch.get_num_threads() != 1:
        raise SystemExit("--clock thread measures the main thread only: use it with --threads 1")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    peak = matmul_peak(clock=clock)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"ditcheck bench attention: D={args.dim}, H={args.heads}, R={args.radius}, eps={args.eps}, float32, "
          f"{torch.get_num_threads()} threads, {args.clock} clock, load average {load:.1f} on {os.cpu_count()} cores",
          flush=True)
    if load > (os.cpu_count() or 1) and args.clock == "wall":
        print("  the machine is loaded: wall times include other processes (and OpenMP threads spinning for preempted "
              "partners); --threads 1 --clock thread measures this process's CPU time", flush=True)
    rows = bench_attention(lengths, dim=args.dim, heads=args.heads, radius=args.radius, eps=args.eps,
                           repeats=args.repeats, num_features=args.num_features, backends=backends, seed=args.seed,
                           chunk_size=args.chunk_size, verbose=True, clock=clock)
    costs, table = None, []
    if not args.no_map and "exact" in backends and "poly" in backends:
        costs = per_token_costs(rows, args.dim, args.heads)
        table = crossover_map(costs)
    _print_report(rows, peak, costs, table, f"ditcheck bench attention (D={args.dim}, H={args.heads}, "
                                            f"R={args.radius}, eps={args.eps})")
    if args.peer:
        length = max(lengths)
        print(f"equal-error comparison at L = {length} (same inputs; error = max |output - float64 SDPA| on "
              f"{_ERROR_ROWS} sampled query rows):")
        for peer in bench_peer(length, dim=args.dim, heads=args.heads, radius=args.radius, repeats=args.repeats,
                               seed=args.seed, clock=clock):
            print(f"  {peer.method:<31} {peer.setting:<45} {_duration(peer.seconds):>10}  max err {peer.max_error:.1e}")
    if args.plot:
        _plot(rows, args.plot)
        print(f"plot saved to {args.plot}")
    return 0
