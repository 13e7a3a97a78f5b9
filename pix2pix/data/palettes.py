"""Palettes: class ids -> colours, with a name per class.

A label map in class ids becomes a colour map before it is tiled, since the generator sees colours:
- cars (the car-segmentation dataset): 0 background, 1 body, 2 wheels, 3 lights, 4 windows,
  coloured black, red, green, blue, white;
- ade20k: ids 0 (unlabelled) .. 150, coloured by the PASCAL VOC colour map;
- a palette file of your own: JSON, one entry per class id in order, {"name": [R, G, B], ...}.
A palette travels with the model (generator_file.py), so translate colours class ids as prepare did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pix2pix.errors import Pix2PixError


@dataclass(frozen=True)
class Palette:
    names: tuple[str, ...]
    colours: np.ndarray  # (classes, 3) uint8

    def colour(self, ids: np.ndarray, source: str = "label map",
               fix: str = "give data.palette a palette that covers it") -> np.ndarray:
        """(H, W) class ids -> (H, W, 3) uint8 colours. Ids beyond the palette raise, naming `source`."""
        if ids.ndim != 2:
            raise Pix2PixError(f"{source}: expected a single-channel class-id map, got shape {ids.shape}")
        found = np.unique(ids)
        bad = found[found >= len(self.colours)]
        if bad.size:
            raise Pix2PixError(f"{source}: class id {int(bad[0])} is not in the palette, which covers "
                               f"0..{len(self.colours) - 1}; {fix}")
        return self.colours[ids]

    def to_dict(self) -> dict:
        """Plain values, as generator files and tiles/info.json keep the palette."""
        return {"names": list(self.names), "colours": self.colours.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Palette:
        return cls(tuple(d["names"]), np.array(d["colours"], dtype=np.uint8))


def voc_colours(n: int) -> np.ndarray:
    """The PASCAL VOC colour map: id bits spread over R, G, B; fixed, distinct, 0 is black."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r, g, b = r | (c & 1) << shift, g | (c >> 1 & 1) << shift, b | (c >> 2 & 1) << shift
            c >>= 3
        out[i] = (r, g, b)
    return out


PALETTES = {
    "cars": Palette(("background", "body", "wheels", "lights", "windows"),
                    np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], dtype=np.uint8)),
    "ade20k": Palette(("unlabelled", *(f"class {i}" for i in range(1, 151))), voc_colours(151)),
}


def load_palette(spec: str, root: str | Path = ".") -> Palette:
    """A palette by name (PALETTES) or from a JSON file inside `root` (data.path, so that DVC sees it
    change), {"name": [R, G, B], ...} in class-id order."""
    if spec in PALETTES:
        return PALETTES[spec]
    root = Path(root).resolve()
    path = (root / spec).resolve()
    if root not in path.parents:
        raise Pix2PixError(f"data.palette is {spec!r}: a palette file must be inside data.path ({root}), where DVC "
                           "tracks it with your pairs")
    try:
        entries = json.loads(path.read_text(), object_pairs_hook=_no_repeats)
        if not isinstance(entries, dict) or not entries:
            raise ValueError("expected a JSON object of class name -> [R, G, B]")
        if not all(isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
                   for c in entries.values()):
            raise ValueError("every colour must be [R, G, B], whole numbers 0-255")
    except FileNotFoundError:
        raise Pix2PixError(f"data.palette is {spec!r}: neither {', '.join(PALETTES)} nor a file in data.path; "
                           "name a palette or a JSON file {\"name\": [R, G, B], ...}") from None
    except (ValueError, TypeError, OSError) as err:
        raise Pix2PixError(f"{path}: not a palette ({err}); write {{\"background\": [0, 0, 0], ...}} "
                           "with one entry per class id") from None
    return Palette(tuple(entries), np.array(list(entries.values()), dtype=np.uint8))


def _no_repeats(pairs: list) -> dict:
    names = [name for name, _ in pairs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # a repeated name would shift every class id after it
        raise ValueError(f"class {repeated[0]!r} is named twice")
    return dict(pairs)
