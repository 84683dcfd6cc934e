"""SAR variants through the ``sarseg bench ssl`` protocol (quick profile, BraTS): what the scale and
adversarial terms do when they are weighted more, beside scratch and full SAR at the defaults.

    .venv/bin/python benchmarks/ssl_variants.py [--variants scratch sar_scale1 ...] [--out runs/ssl-variants]

Prints the Markdown table and each pretrained model's proxy evaluation (scale accuracy on fresh cubes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sarseg import bench_ssl
from sarseg.core.card import read_card
from sarseg.runtime import configure_threads, tune_malloc
from ssl_shared import FOLDS, SHARED_DATA, shared_tasks

VARIANTS = {
    "scratch": None,
    "sar_scale1": {"lambda_scale": 1.0},
    "sar_scale1_no_adv": {"lambda_scale": 1.0, "lambda_adv": 0.0},
    "sar_scale1_adv0.2": {"lambda_scale": 1.0, "lambda_adv": 0.2},
    # scales three times apart instead of two (the largest still fits the cropped BraTS brain)
    "sar_scale1_wide_scales_no_adv": {"lambda_scale": 1.0, "lambda_adv": 0.0, "proxy": {"scales": (16.0, 48.0, 144.0)}},
    # the reversal weight ramps over the whole run instead of the first 30%
    "sar_scale1_slow_adv": {"lambda_scale": 1.0, "adv_warmup": 1.0},
}
FIRST = ["scratch", "sar_scale1", "sar_scale1_no_adv", "sar_scale1_adv0.2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=FIRST)
    parser.add_argument("--out", type=Path, default=Path("runs/ssl-variants"))
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    args = parser.parse_args()
    tune_malloc()
    configure_threads(None)
    args.out.mkdir(parents=True, exist_ok=True)
    profile = bench_ssl.PROFILES["quick"]
    sources, tasks = shared_tasks(args.data, args.out, FOLDS["quick"])
    rows = bench_ssl.run(sources, [t for t in tasks if t.dataset == "brats"], args.out, profile, torch.device("cpu"),
                         log=lambda line: print(line, file=sys.stderr, flush=True), inits={v: VARIANTS[v] for v in args.variants})
    summary = bench_ssl.summarise(rows)
    (args.out / "summary.md").write_text(bench_ssl.markdown(summary), encoding="utf-8")
    print(bench_ssl.markdown(summary))
    for name in args.variants:
        folder = args.out / "pretrained" / name
        if (folder / "model.json").is_file():
            print(name, read_card(folder).provenance["proxy_evaluation"])


if __name__ == "__main__":
    main()
