"""Train-step throughput of a preset's network widened by each factor, beside its own width,
measured one after another in one process: what a wider pipeline stage costs on this machine.

    python -m bench widths [--preset P] [--widen F ...] [--steps N]

Prints images/s for each factor and its time per image as a ratio of factor 1's. The ratio
is expected near factor^2 (every convolution's channels scaled, `ModelConfig.widened`); where
it jumps past that, the CPU's convolution kernels have left their fast path for those channel
counts, and a stage that wide costs more than its width.
"""
from __future__ import annotations

import argparse
from dataclasses import replace

from bench.bench_train import step_rates
from kit import config as config_io


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench widths")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--widen", type=float, nargs="+", default=[1.5, 1.625, 1.75, 2.0])
    parser.add_argument("--steps", type=int, default=10, help="train steps per timing")
    args = parser.parse_args(argv or [])
    base = config_io.preset(args.preset)
    factors = [1.0, *(f for f in args.widen if f != 1.0)]
    rates = {f: step_rates(replace(base, model=base.model.widened(f)), args.steps,
                           only=("split",))["split"] for f in factors}
    out = {}
    for factor, rate in rates.items():
        widths = base.model.widened(factor).widths
        out[f"x{factor:g}"] = (f"{'/'.join(map(str, widths))} {rate:.0f} images/s, "
                               f"{rates[1.0] / rate:.2f}x the time (width^2 {factor ** 2:.2f})")
    return out
