"""Car class-id masks <-> colour masks.

Class ids (the car-segmentation dataset): 0 background, 1 body, 2 wheels, 3 lights, 4 windows.
Colours: background black, body red, wheels green, lights blue, windows white.
"""

from __future__ import annotations

import numpy as np

from pix2pix.errors import Pix2PixError

CLASS_NAMES = ("background", "body", "wheels", "lights", "windows")
PALETTE = np.array(
    [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], dtype=np.uint8
)


def colorize(class_ids: np.ndarray, source: str = "mask") -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colour mask. Unknown ids raise, naming `source`."""
    if class_ids.ndim != 2:
        raise Pix2PixError(f"{source}: expected a single-channel class-id mask, got shape {class_ids.shape}")
    found = np.unique(class_ids)
    bad = found[found >= len(PALETTE)]
    if bad.size:
        raise Pix2PixError(
            f"{source}: unknown class id {int(bad[0])}; car masks may only hold 0..{len(PALETTE) - 1}"
        )
    return PALETTE[class_ids]


def decolorize(color: np.ndarray) -> np.ndarray:
    """(H, W, 3) colour mask -> (H, W) class ids, by the nearest palette colour."""
    dist = ((color[..., None, :].astype(np.int32) - PALETTE.astype(np.int32)) ** 2).sum(-1)
    return dist.argmin(-1).astype(np.uint8)
