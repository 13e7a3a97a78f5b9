"""Class-id masks <-> colour masks.

Cars (the car-segmentation dataset): 0 background, 1 body, 2 wheels, 3 lights, 4 windows, coloured
black, red, green, blue, white. ADE20K: ids 0 (unlabelled) .. 150, coloured by a fixed palette.
"""

from __future__ import annotations

import numpy as np

from pix2pix.errors import Pix2PixError

PALETTE = np.array(
    [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], dtype=np.uint8
)


def bit_palette(n: int) -> np.ndarray:
    """The PASCAL VOC colour map: id bits spread over R, G, B; fixed, distinct, 0 is black."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r, g, b = r | (c & 1) << shift, g | (c >> 1 & 1) << shift, b | (c >> 2 & 1) << shift
            c >>= 3
        out[i] = (r, g, b)
    return out


PALETTES = {"cars": PALETTE, "ade20k": bit_palette(151)}


def colorize(class_ids: np.ndarray, source: str = "mask", palette: np.ndarray = PALETTE) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colour mask. Unknown ids raise, naming `source`."""
    if class_ids.ndim != 2:
        raise Pix2PixError(f"{source}: expected a single-channel class-id mask, got shape {class_ids.shape}")
    found = np.unique(class_ids)
    bad = found[found >= len(palette)]
    if bad.size:
        raise Pix2PixError(
            f"{source}: unknown class id {int(bad[0])}; masks of this dataset may only hold 0..{len(palette) - 1}"
        )
    return palette[class_ids]
