"""Dice per region from ``sarseg evaluate``'s JSON report on stdin, as a short table (``make demo``)."""

import json
import sys

report = json.load(sys.stdin)
print(f"{'region':18} {'Dice':>6} {'HD95 mm':>8} {'predicted ml':>13} {'reference ml':>13}")
for row in report["labels"]:
    hd95 = "-" if row.get("hd95_mm") is None else f"{row['hd95_mm']:.1f}"
    print(f"{row['name']:18} {row['dice']:6.3f} {hd95:>8} {row.get('pred_ml', float('nan')):13.1f} "
          f"{row.get('ref_ml', float('nan')):13.1f}")
