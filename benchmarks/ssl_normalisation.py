"""Is the gap between scratch and pretrained inits on BraTS the pretraining or the normalisation? Scratch
fine-tuning z-scores MR (the baseline's setting); a pretrained model keeps the normalisation it was
pretrained with (MR percentiles to [0, 1]). This pretrains restoration only (Models Genesis) with MR
z-scored as fine-tuning does, under the quick profile of ``sarseg bench ssl``, fine-tunes it on the BraTS
task (one labeled case, 3 seeds) and pairs it with the rows of an earlier quick run (``--base``:
its results.json holds scratch and restoration on the same seeds and test cases).

    python benchmarks/ssl_normalisation.py --base runs/bench-ssl/results.json [--out runs/bench-ssl-norm]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sarseg.bench_ssl import INITS, PROFILES, paired, shared_tasks, run  # noqa: E402
from sarseg.config import FINETUNE_NORMALISATION  # noqa: E402
from sarseg.runtime import configure_threads  # noqa: E402

NAME = "restoration_zscore"


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="results.json of a bench ssl --quick run")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-ssl-norm")
    args = parser.parse_args()
    configure_threads(None)
    profile = PROFILES["quick"]
    sources, tasks = shared_tasks(args.data, profile.shared)
    brats = [t for t in tasks if t.name == "brats2018"]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(sources, brats, args.out, profile, torch.device("cpu"),
               inits={NAME: {**INITS["restoration"], "normalisation": FINETUNE_NORMALISATION}})
    base = [r for r in json.loads(args.base.read_text()) if r["dataset"] == "brats2018"]
    print("| region | steps | init | Dice | paired vs scratch [95% CI] | paired vs restoration (percentiles) [95% CI] |")
    print("|---|---|---|---|---|---|")
    for region in ("whole tumor", "tumor core", "enhancing tumor"):
        for step in profile.finetune_checkpoints:
            mine = [r for r in rows if r["region"] == region and r["step"] == step]
            line = [region, str(step), NAME, f"{sum(r['dice'] for r in mine) / len(mine):.3f}"]
            for other in ("scratch", "restoration"):
                d = paired(mine, [r for r in base if r["init"] == other and r["region"] == region and r["step"] == step])
                line.append(f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] ({d['n']})")
            print("| " + " | ".join(line) + " |", flush=True)


if __name__ == "__main__":
    main()
