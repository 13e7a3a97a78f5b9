"""Load a split of tiles once, as one uint8 tensor on the training device.

Shape (N, 6, H, W): channels 0-2 are the input, 3-5 the target (direction already applied), so a
training step is pure indexing: no decoding, no DataLoader workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pix2pix.data.pairs import read_rgb
from pix2pix.data.tiles import read_manifest
from pix2pix.errors import Pix2PixError


def pick_device(name: str) -> torch.device:
    """`auto`: CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise Pix2PixError(f"params.yaml: device is '{name}' but no CUDA GPU is visible; set device: auto or cpu")
    return torch.device(name)


def load_split(tiles_dir: str | Path, split: str, direction: str, device: torch.device | str = "cpu") -> torch.Tensor:
    tiles_dir = Path(tiles_dir)
    manifest = read_manifest(tiles_dir)
    names = manifest.loc[manifest["split"] == split, "tile"].tolist()
    if not names:
        raise Pix2PixError(f"{tiles_dir}: no '{split}' tiles; check data.val_fraction or re-run prepare")
    tiles = np.stack([read_rgb(tiles_dir / name) for name in names])  # (N, H, 2W, 3)
    width = tiles.shape[2] // 2
    a, b = tiles[:, :, :width], tiles[:, :, width:]
    pair = (a, b) if direction == "AtoB" else (b, a)
    data = torch.from_numpy(np.concatenate(pair, axis=-1)).permute(0, 3, 1, 2).contiguous()
    return data.to(device)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def split_pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 6, H, W) -> input (N, 3, H, W), target (N, 3, H, W)."""
    return x[:, :3], x[:, 3:]
