"""Generate the module icons (128x128, deterministic) from the extension icon.

* ``SARSegmentation/Resources/Icons/SARSegmentation.png``: the extension icon with a segmented tumor
  (a filled red blob with a yellow outline) in the lower right corner.
* ``SARPretrain/Resources/Icons/SARPretrain.png``: the extension icon with a circular "training"
  arrow in the lower right corner.

Usage: python Resources/Icons/make_module_icons.py  (after make_icon.py when the extension icon changed)
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch  # noqa: E402

SIZE = 128
ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "Resources" / "Icons" / "SARExtension.png"
OUTPUTS = {
    "segmentation": ROOT / "SARSegmentation" / "Resources" / "Icons" / "SARSegmentation.png",
    "pretrain": ROOT / "SARPretrain" / "Resources" / "Icons" / "SARPretrain.png",
}


def _canvas():
    fig = plt.figure(figsize=(1, 1), dpi=SIZE)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.imshow(plt.imread(BASE), extent=(0, 1, 0, 1), zorder=0, interpolation="lanczos")
    # badge background in the lower right corner
    ax.add_patch(Circle((0.76, 0.24), 0.22, color="white", ec="#1f5fa8", lw=2.0, zorder=3))
    return fig, ax


def _segmentation_badge(ax):
    t = np.linspace(0.0, 2.0 * np.pi, 200)
    r = 0.13 * (1.0 + 0.12 * np.sin(3 * t + 0.4) + 0.06 * np.sin(5 * t))
    ax.fill(0.76 + r * np.cos(t), 0.24 + r * np.sin(t), color="#e0442e", alpha=0.85, zorder=4)
    ax.plot(0.76 + r * np.cos(t), 0.24 + r * np.sin(t), color="#ffd21f", lw=2.2, zorder=5)


def _pretrain_badge(ax):
    arrow = FancyArrowPatch((0.87, 0.30), (0.70, 0.36), connectionstyle="arc3,rad=0.9", arrowstyle="-|>",
                            mutation_scale=14, lw=2.6, color="#2e86de", zorder=4)
    ax.add_patch(arrow)
    arrow = FancyArrowPatch((0.65, 0.18), (0.82, 0.12), connectionstyle="arc3,rad=0.9", arrowstyle="-|>",
                            mutation_scale=14, lw=2.6, color="#1f5fa8", zorder=4)
    ax.add_patch(arrow)


def main():
    plt.rcParams["svg.hashsalt"] = "sar"  # no randomness anywhere
    for kind, out in OUTPUTS.items():
        fig, ax = _canvas()
        (_segmentation_badge if kind == "segmentation" else _pretrain_badge)(ax)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=SIZE, transparent=True, metadata={"Software": None})
        plt.close(fig)
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
