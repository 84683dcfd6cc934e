"""How often the bench's 95% interval for a paired difference covers the true mean, by simulation: grids of
seeds x test cases drawn from a two-way random-effects model (a seed effect, a case effect and a residual, true
mean 0), scored with ``bench_ssl.crossed_interval`` and with the t interval that takes every pair as independent.

    PYTHONPATH=. python benchmarks/interval_coverage.py [--grids 4000]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

from sarseg.bench_ssl import crossed_interval

SHAPES = ((3, 4), (3, 50))  # seeds x test cases: BraTS and LIDC in the cases profile
SPREADS = ((0.03, 0.05, 0.05), (0.0, 0.05, 0.05), (0.03, 0.0, 0.05), (0.0, 0.0, 0.05), (0.05, 0.05, 0.01))  # seed, case, residual sd


def independent_interval(grid: np.ndarray) -> tuple[float, float]:
    values = grid.ravel()
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / values.size ** 0.5
    return values.mean() - half, values.mean() + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", type=int, default=4000, help="simulated grids per setting")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| seeds x cases | sd seed / case / residual | crossed: coverage (mean width) | independent: coverage (mean width) |")
    print("|---|---|---|---|")
    for seeds, cases in SHAPES:
        for sd_seed, sd_case, sd_res in SPREADS:
            hits, widths = np.zeros(2), np.zeros(2)
            for _ in range(args.grids):
                grid = (rng.normal(0, sd_seed, (seeds, 1)) + rng.normal(0, sd_case, (1, cases))
                        + rng.normal(0, sd_res, (seeds, cases)))
                for i, (low, high) in enumerate((crossed_interval(grid), independent_interval(grid))):
                    hits[i] += low <= 0 <= high
                    widths[i] += high - low
            crossed, independent = (f"{h / args.grids:.3f} ({w / args.grids:.3f})" for h, w in zip(hits, widths))
            print(f"| {seeds} x {cases} | {sd_seed} / {sd_case} / {sd_res} | {crossed} | {independent} |", flush=True)


if __name__ == "__main__":
    main()
