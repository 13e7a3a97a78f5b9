"""How an image is framed for the model: the one rule prepare applies to every source image and
translate to every input, so that a model sees at inference what it saw in training.

`data.fit` says how a non-square image becomes a square one:
- crop: resize the shorter side to the size, keep the centre (prepare drops the sides; translate
  keeps them, generating along the longer side in overlapping squares);
- pad: pad to a square (black, centred), then resize: the whole image, smaller.
Label maps are resized nearest (no blended colours), photos bicubic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

MAX_PIXELS = 4_000_000  # translate --scale native and the demo: larger images are generated in tiles
                        # (a whole pass's activations grow with the pixels)


def fit(image: Image.Image, size: int, mode: str, resample) -> Image.Image:
    """The square `size` image prepare tiles: crop = resize shorter side + centre crop; pad = pad to square + resize."""
    framed = frame(image, size, mode, resample)
    return framed.image.crop(framed.centre(size))


def pad_square(image: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """`image` centred on a black square; (the square, the box it occupies)."""
    w, h = image.size
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side))
    left, top = (side - w) // 2, (side - h) // 2
    canvas.paste(image, (left, top))
    return canvas, (left, top, left + w, top + h)


@dataclass(frozen=True)
class Framed:
    """An input at the model's scale: `image` (shorter side = the size; square for pad), the `box`
    in it that holds the input, and the input's own (width, height) to give the output back at."""

    image: Image.Image
    box: tuple[int, int, int, int]
    size: tuple[int, int]

    def centre(self, side: int) -> tuple[int, int, int, int]:
        """The centred side x side square of `image` (what prepare keeps)."""
        w, h = self.image.size
        left, top = (w - side) // 2, (h - side) // 2
        return left, top, left + side, top + side

    def restore(self, output: np.ndarray) -> np.ndarray:
        """The model's output (H, W, 3) uint8 for `image`, cut to `box` and resized to the input's size."""
        out = Image.fromarray(output).crop(self.box)
        return np.asarray(out if out.size == self.size else out.resize(self.size, Image.BICUBIC))


def frame(image: Image.Image, size: int, mode: str, resample) -> Framed:
    """`image` framed as `mode` (data.fit) says, at the scale of a size x size model."""
    w, h = image.size
    if mode == "pad":
        square, (left, top, right, bottom) = pad_square(image)
        k = size / square.width
        box = (round(left * k), round(top * k), round(right * k), round(bottom * k))
        return Framed(square.resize((size, size), resample), box, (w, h))
    k = size / min(w, h)
    nw, nh = max(size, round(w * k)), max(size, round(h * k))
    return Framed(image.resize((nw, nh), resample), (0, 0, nw, nh), (w, h))
