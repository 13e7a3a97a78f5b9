"""`pix2pix data check`: a folder of pairs as prepare will see it, before a long run.

The layout found, the pairs per split (after the seeded carving of missing splits), the sizes and
modes of A and B, every problem prepare would refuse, and a preview of the first pairs framed and
coloured as the model will see them. `pix2pix doctor` gives the same verdict from the files'
headers alone (`scan`), without decoding the pixels.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pix2pix.data.device_data import to_unit
from pix2pix.data.images import image_header
from pix2pix.data.pairs import Found
from pix2pix.data.tiles import SHOWN, Recipe, assign_splits, check_aspect, make_tile, problems, read_source, shown, tiles_of
from pix2pix.errors import Pix2PixError
from pix2pix.grids import comparison, save


@dataclass
class Report:
    root: Path
    layout: str
    recipe: Recipe
    splits: Counter
    formats: dict[str, Counter] = field(default_factory=dict)  # side -> Counter of "WxH mode"
    ignored: list[Path] = field(default_factory=list)
    problem: str | None = None

    def lines(self) -> list[str]:
        label = {"A": "A (label maps)", "B": "B (label maps)"}.get(self.recipe.label_half, "")
        out = [f"{self.root}: layout {self.layout}, {sum(self.splits.values())} pairs "
               f"({', '.join(f'{s} {n}' for s, n in sorted(self.splits.items()))})"]
        for side, formats in self.formats.items():
            name = label if label.startswith(side) else side
            common = ", ".join(f"{f} ({n})" for f, n in formats.most_common(SHOWN))
            more = f", {len(formats) - SHOWN} other sizes" if len(formats) > SHOWN else ""
            out.append(f"{name}: {common}{more}")
        if self.recipe.palette is not None:
            out.append(f"palette: {len(self.recipe.palette.names)} classes ({shown(self.recipe.palette.names, 6)})")
        if self.ignored:
            out.append(f"not images, skipped: {len(self.ignored)} ("
                       + ", ".join(str(p.relative_to(self.root)) for p in self.ignored[:SHOWN]) + ")")
        out.append(f"problems: {self.problem}" if self.problem else "problems: none")
        return out


def _headers(paths) -> dict[Path, tuple[int, int, str] | Pix2PixError]:
    """Each file's image_header, or the error saying it cannot be read: read once, for both the
    formats and scan's checks."""
    out = {}
    for path in paths:
        try:
            out[path] = image_header(path)
        except Pix2PixError as err:
            out[path] = err
    return out


def _format(header) -> str:
    return "unreadable" if isinstance(header, Pix2PixError) else "{}x{} {}".format(*header)


def _size(header) -> tuple[int, int]:
    """(width, height) from a header of _headers; its error again for a file that cannot be read."""
    if isinstance(header, Pix2PixError):
        raise header
    return header[:2]


def _report(root: Path, found: Found, recipe: Recipe, cfg) -> tuple[Report, list, dict]:
    """The report (problem not yet known), the pairs assigned to splits, and their files' headers."""
    pairs = assign_splits(found.pairs, cfg.data.val_fraction, cfg.seed)
    sides = {"A": [p.a for p in pairs]} if found.layout == "ab" else {"A": [p.a for p in pairs], "B": [p.b for p in pairs]}
    headers = _headers(p for paths in sides.values() for p in paths)
    formats = {side: Counter(_format(headers[p]) for p in paths) for side, paths in sides.items()}
    return Report(root, found.layout, recipe, Counter(p.split for p in pairs), formats, found.ignored), pairs, headers


def check(root: str | Path, cfg, preview: Path | None = None, samples: int = 4) -> Report:
    """Every pair decoded and tiled as prepare tiles it (nothing written but the preview)."""
    root = Path(root)
    found, recipe = read_source(root, cfg)
    report, pairs, _ = _report(root, found, recipe, cfg)
    good, failures = [], []
    for pair, tile, _ in tiles_of(pairs, recipe, cfg, desc="check"):
        if isinstance(tile, str):
            failures.append(tile)
        elif len(good) < samples:
            good.append(pair)
    report.problem = problems(root, found, failures, pairs)
    if preview and good:
        size = cfg.image_size  # every split at the size the model sees (train tiles are cropped to it)
        tiles = to_unit(torch.from_numpy(np.stack([make_tile(p, size, recipe)[0] for p in good])).permute(0, 3, 1, 2))
        roles = ("input", "target") if cfg.task_direction == "AtoB" else ("target", "input")
        save(comparison((tiles[..., :size], tiles[..., size:]), samples, f"as the model sees them ({cfg.data.fit})",
                        columns=[f"A: {roles[0]}", f"B: {roles[1]}"]), preview)
    return report


def scan(root: str | Path, cfg) -> Report:
    """The same verdict from the headers: partners, readable files, matching aspect ratios."""
    root = Path(root)
    found, recipe = read_source(root, cfg)
    report, pairs, headers = _report(root, found, recipe, cfg)
    failures = []
    for pair in pairs:
        try:
            sizes = [_size(headers[p]) for p in {pair.a: None, pair.b: None}]
            if len(sizes) == 2:
                check_aspect(pair, *sizes)
        except Pix2PixError as err:
            failures.append(str(err))
    report.problem = problems(root, found, failures, pairs)
    return report
