"""A curves image (losses, validation quality and FID per epoch) for people who would rather look.

matplotlib is imported here only, with the Agg backend: no display is needed.
"""

from __future__ import annotations

from pathlib import Path

from pix2pix.files import atomic_path
from pix2pix.losses import LOSS_NAMES

PANELS = (
    ("losses", LOSS_NAMES),
    ("val L1 / SSIM", ("val_L1", "val_SSIM")),
    ("val PSNR (dB)", ("val_PSNR",)),
    ("val FID", ("val_FID",)),
)


def save_curves(rows: list[dict], path: str | Path, title: str = "") -> None:
    """One panel per group of PANELS, epochs on x; series absent from `rows` are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2), constrained_layout=True)
    epochs = [r["epoch"] for r in rows]
    for ax, (name, keys) in zip(axes, PANELS):
        for key in keys:
            points = [(e, r[key]) for e, r in zip(epochs, rows) if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
