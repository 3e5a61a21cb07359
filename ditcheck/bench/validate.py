"""``ditcheck bench validate``: time and peak memory of ``ditcheck validate dit`` on full-size DiTs.

Each model (DiT-S/2, B/2, L/2, XL/2 at 256 px: latents 4 x 32 x 32, 1000 classes, learn_sigma) is
ditcheck.models.dit.DiT in the original layout, built in float32 in a fresh child process, then
validated with ditcheck.validate.dit (random weights, default examples, no diagnosis needed when it
conforms). Printed per model: parameters, the path taken (block by block above
dit_stream.STREAM_PARAMETERS), build seconds, validation seconds (wall clock, time.perf_counter),
the validation's CPU seconds (time.process_time: every thread of the child, so on a shared machine
the figure that does not depend on the other processes; on an idle machine wall ~ CPU / threads)
and the child's peak resident memory (resource.getrusage(RUSAGE_SELF).ru_maxrss, which includes
building the model), plus the verdict. The 1-minute load average (os.getloadavg) is printed before
and after each model: wall-clock figures taken under load are slower by about load / cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

import torch

from ditcheck.models.dit import DiT
from ditcheck.options import add_list_option
from ditcheck.reference.dit import DiTConfig
from ditcheck.validate import dit

HELP = "time and peak memory of validate dit on DiT-S/2, B/2, L/2, XL/2 (one child process each)"

__all__ = ["HELP", "SIZES", "measure_one", "add_arguments", "run"]

#: name -> (hidden size, depth, heads), facebookresearch/DiT's DiT_models table, patch 2
SIZES: dict[str, tuple[int, int, int]] = {"DiT-S/2": (384, 12, 6), "DiT-B/2": (768, 12, 12),
                                          "DiT-L/2": (1024, 24, 16), "DiT-XL/2": (1152, 28, 16)}


def measure_one(name: str, examples: int, dtype: str, timeout: float) -> dict[str, object]:
    """Build ``name`` and validate it in this process; the figures as a dict."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    hidden, depth, heads = SIZES[name]
    config = DiTConfig(input_size=32, patch_size=2, in_channels=4, hidden_size=hidden, depth=depth, num_heads=heads,
                       num_classes=1000)
    start = time.perf_counter()
    model = DiT(config, dtype=getattr(torch, dtype))
    built = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    report = dit(model, examples=examples, timeout=timeout, diagnose=False, target=name)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    return {"model": name, "parameters": sum(p.numel() for p in model.parameters()),
            "path": report.settings.get("path", "stored"), "build_s": built, "validate_s": seconds, "cpu_s": cpu,
            "peak_rss_bytes": peak, "ok": report.ok, "exit_code": report.exit_code}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_list_option(parser, "--models", choices=list(SIZES), default=list(SIZES), metavar="NAME,NAME",
                    help="which sizes (default all)")
    parser.add_argument("--examples", type=int, default=3, help="examples per validation (default 3)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default float32")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds the target may compute between two hooked submodules (default 60, as "
                             "ditcheck validate)")
    parser.add_argument("--child", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.child:  # one model, in this (fresh) process: print its figures as JSON
        print(json.dumps(measure_one(args.child, args.examples, args.dtype, args.timeout)))
        return 0
    print(f"ditcheck validate dit, {args.dtype}, {args.examples} examples (batches of 4), random weights; "
          "peak memory = the child's ru_maxrss (build included)")
    print(f"{'model':<10} {'parameters':>12} {'path':<34} {'build s':>8} {'validate s':>11} {'CPU s':>7} "
          f"{'peak GiB':>9}  {'load':>10}  verdict")
    worst = 0
    for name in args.models:
        command = [sys.executable, "-m", "ditcheck.bench", "validate", "--child", name, "--examples",
                   str(args.examples), "--dtype", args.dtype, "--timeout", str(args.timeout)]
        load_before = os.getloadavg()[0]
        done = subprocess.run(command, capture_output=True, text=True)
        load = f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"
        if done.returncode != 0:
            print(f"{name:<10} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            worst = 1
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        verdict = "CONFORMS" if row["ok"] else f"exit {row['exit_code']}"
        worst = max(worst, 0 if row["ok"] else 1)
        print(f"{name:<10} {row['parameters']:>12,} {row['path']:<34.34} {row['build_s']:>8.1f} "
              f"{row['validate_s']:>11.1f} {row['cpu_s']:>7.1f} {row['peak_rss_bytes'] / 2**30:>9.2f}  {load:>10}  "
              f"{verdict}")
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ditcheck bench validate", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
