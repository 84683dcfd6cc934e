"""Generate Resources/Icons/SARExtension.png (128x128, deterministic).

A soft brain-like blob (two hemispheres with a few gyri strokes) overlaid by
three nested squares standing for the three restoration scales of SAR.

Usage: python Resources/Icons/make_icon.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

SIZE = 128
OUT = Path(__file__).with_name("SARExtension.png")


def _blob(ax):
    t = np.linspace(0.0, 2.0 * np.pi, 400)
    # Wobbly, slightly flattened outline of a brain seen from above.
    r = 1.0 + 0.045 * np.sin(9 * t) + 0.025 * np.sin(14 * t + 0.7)
    x = 0.70 * r * np.cos(t)
    y = 0.56 * r * np.sin(t) - 0.06 * np.cos(2 * t)
    ax.fill(x, y, color="#f4b3c0", ec="#b4506a", lw=2.4, zorder=1)
    # Gyri-like curves, kept inside each hemisphere.
    s = np.linspace(-1.0, 1.0, 60)
    for side in (-1, 1):
        for k, yoff in enumerate((-0.26, 0.0, 0.26)):
            width = 0.22 if k == 1 else 0.17
            x = side * (0.34 + width * s)
            y = yoff + 0.05 * np.sin(5 * s + 2 * k)
            ax.plot(x, y, color="#c9677f", lw=1.5, solid_capstyle="round", zorder=2)
    ax.plot([0, 0], [-0.50, 0.50], color="#b4506a", lw=2.0, zorder=2)


def _scales(ax):
    colors = ("#1f5fa8", "#2e86de", "#7fc4ff")
    for half, color in zip((0.74, 0.49, 0.24), colors):
        box = FancyBboxPatch(
            (-half, -half),
            2 * half,
            2 * half,
            boxstyle="round,pad=0,rounding_size=0.05",
            fill=False,
            ec=color,
            lw=3.2,
            zorder=3,
        )
        ax.add_patch(box)


def main(out=OUT):
    dpi = 64
    fig = plt.figure(figsize=(SIZE / dpi, SIZE / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.92, 0.92)
    ax.set_ylim(-0.92, 0.92)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.add_patch(
        FancyBboxPatch(
            (-0.88, -0.88),
            1.76,
            1.76,
            boxstyle="round,pad=0,rounding_size=0.22",
            fc="#eef3fa",
            ec="none",
            zorder=0,
        )
    )
    _blob(ax)
    _scales(ax)
    fig.savefig(out, dpi=dpi, transparent=True, metadata={"Software": None})
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main())
