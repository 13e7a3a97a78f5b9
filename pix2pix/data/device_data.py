"""Load a split of tiles once, as one uint8 tensor on the training device.

Shape (N, 6, H, W): channels 0-2 are the input, 3-5 the target (direction already applied), so a
training step is pure indexing: no decoding, no DataLoader workers. A split larger than the
`train.device_data_gb` budget stays in pinned host memory and each batch is copied one step ahead
on a side stream, overlapping the copy with the previous step's compute.
"""

from __future__ import annotations

from pathlib import Path

import hashlib
import logging
from collections.abc import Iterator

import numpy as np
import torch

from pix2pix.data.images import read_rgb
from pix2pix.data.tiles import read_manifest
from pix2pix.errors import Pix2PixError

log = logging.getLogger(__name__)


def halves(tiles: np.ndarray, direction: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) of A|B tiles (..., H, 2 * size, 3): (A, B) for AtoB, else (B, A)."""
    a, b = tiles[..., :size, :], tiles[..., size:2 * size, :]
    return (a, b) if direction == "AtoB" else (b, a)


def load_split(tiles_dir: str | Path, split: str, direction: str, device: torch.device | str = "cpu",
               size: int | None = None) -> torch.Tensor:
    """The split's pairs; with `size`, its tiles must be that side (Config.tile_size)."""
    tiles_dir = Path(tiles_dir)
    manifest = read_manifest(tiles_dir)
    names = manifest.loc[manifest["split"] == split, "tile"].tolist()
    if not names:
        raise Pix2PixError(f"{tiles_dir}: no '{split}' tiles; check data.val_fraction or re-run prepare")
    tiles = np.stack([read_rgb(tiles_dir / name) for name in names])  # (N, H, 2W, 3)
    width = tiles.shape[2] // 2
    if size is not None and (tiles.shape[1], width) != (size, size):
        raise Pix2PixError(f"{tiles_dir}: the {split} tiles are {width}x{tiles.shape[1]}, the params ask for {size}x{size} "
                           "(image_size, and augment.load_scale for train); re-run prepare (dvc repro prepare)")
    data = torch.from_numpy(np.concatenate(halves(tiles, direction, width), axis=-1)).permute(0, 3, 1, 2).contiguous()
    return data.to(device)


def resident(data: torch.Tensor, device: torch.device, budget_gb: float) -> bool:
    """Whether `data` lives on `device` for the run: on CPU it is already there; on a GPU when it fits budget_gb."""
    return device.type == "cpu" or data.numel() * data.element_size() <= budget_gb * 2**30


def place(data: torch.Tensor, device: torch.device, budget_gb: float) -> torch.Tensor:
    """`data` on `device` if resident; else in host memory (pinned when CUDA is used)."""
    if resident(data, device, budget_gb):
        return data.to(device)
    log.info("%.1f GB of tiles exceed train.device_data_gb=%g: kept in pinned host memory",
             data.numel() / 2**30, budget_gb)
    return data.pin_memory() if device.type == "cuda" else data


def batches(data: torch.Tensor, order: torch.Tensor, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """data[order] in batches on `device`; host-held data is copied one batch ahead on a side stream."""
    starts = range(0, len(order), batch_size)
    if data.device.type == device.type:  # already there (one GPU per process)
        for i in starts:
            yield data[order[i:i + batch_size]].to(device)
        return
    order, stream, compute = order.cpu(), torch.cuda.Stream(device), torch.cuda.current_stream(device)

    def copy(i: int) -> torch.Tensor:
        host = data[order[i:i + batch_size]].pin_memory()
        with torch.cuda.stream(stream):
            return host.to(device, non_blocking=True)

    ahead = copy(0)
    for i in starts:
        compute.wait_stream(stream)  # this batch has arrived
        batch = ahead
        batch.record_stream(compute)  # its memory is in use by the compute stream
        if i + batch_size < len(order):
            ahead = copy(i + batch_size)
        yield batch


def pixels_hash(*splits: torch.Tensor) -> str:
    """sha256 of the pixels of loaded splits: identifies the training data without reading the files again."""
    digest = hashlib.sha256()
    for split in splits:
        digest.update(str(tuple(split.shape)).encode())
        digest.update(split.cpu().numpy().tobytes())
    return digest.hexdigest()


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def split_pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 6, H, W) -> input (N, 3, H, W), target (N, 3, H, W)."""
    return x[:, :3], x[:, 3:]
