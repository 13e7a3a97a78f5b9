"""Comparison pictures: rows of images under a header that names the columns.

- the per-epoch and evaluation grid: input | output | target for fixed samples;
- the evolution picture: input | output at a handful of epochs, first to last | target, built at
  the end of a run from its per-epoch grids;
- the data check's preview: A | B as the model will see them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from pix2pix.data.device_data import to_uint8
from pix2pix.files import atomic_path

HEADER = 28  # pixels: a title line and a line of column names
COLUMNS = ("input", "output", "target")


def picture(columns: list[str], rows: np.ndarray, size: int, title: str) -> Image.Image:
    """(H, W, 3) uint8 `rows`, columns `size` pixels wide, under a header of `title` and the names."""
    canvas = Image.new("RGB", (rows.shape[1], rows.shape[0] + HEADER), "white")
    canvas.paste(Image.fromarray(np.ascontiguousarray(rows)), (0, HEADER))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="black")
    for col, name in enumerate(columns):
        draw.text((col * size + 4, 15), name, fill="black")
    return canvas


def save(image: Image.Image, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def comparison(images: tuple, samples: int, title: str, columns=COLUMNS) -> Image.Image:
    """The first `samples` of each of `images` (float [-1, 1] (N, 3, S, S) tensors, one per column),
    a row per sample."""
    images = [x[:samples] for x in images]
    rows = torch.cat([torch.cat([to_uint8(x) for x in row], dim=-1) for row in zip(*images)], dim=-2)
    return picture(list(columns), rows.permute(1, 2, 0).cpu().numpy(), images[0].shape[-1], title)


def save_grid(images: tuple, samples: int, path: str | Path, title: str) -> None:
    """(inputs, outputs, targets): rows = samples, columns = input | output | target."""
    save(comparison(images, samples, title), path)


def evolution(grids: dict[int, Path], size: int, epochs: int = 5) -> Image.Image:
    """input | the output at `epochs` epochs spread from the first to the last | target, for the
    samples of the per-epoch grids (grids: epoch -> its file, as save_grid drew it)."""
    have = sorted(grids)
    shown = have if len(have) <= epochs else [have[round(i * (len(have) - 1) / (epochs - 1))] for i in range(epochs)]
    body = {e: np.asarray(Image.open(grids[e]).convert("RGB"))[HEADER:] for e in shown}
    last = body[shown[-1]]
    columns = [last[:, :size]] + [body[e][:, size:2 * size] for e in shown] + [last[:, 2 * size:3 * size]]
    names = ["input", *(f"epoch {e}" for e in shown), "target"]
    return picture(names, np.concatenate(columns, axis=1), size, "the same val samples over the epochs")
