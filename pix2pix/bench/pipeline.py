"""What the benchmarks share: this project's training pipeline set up for timing, and the timer."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pix2pix.config import Config
from pix2pix.data.augment import PairJitter
from pix2pix.data.device_data import batches, split_pair
from pix2pix.data.download import fetch
from pix2pix.data.tiles import build_tiles
from pix2pix.distributed import World
from pix2pix.errors import Pix2PixError
from pix2pix.trainer import Pix2Pix


def endless(make_iter):
    """The items of make_iter(), again and again."""
    while True:
        yield from make_iter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(next_batch, work, device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    """(seconds of the `warmup` untimed iterations, seconds per timed iteration) of work(next_batch())."""
    start = time.perf_counter()
    for _ in range(warmup):
        work(next_batch())
    sync(device)
    warm = time.perf_counter()
    for _ in range(steps):
        work(next_batch())
    sync(device)
    return warm - start, (time.perf_counter() - warm) / steps


def table(title: str, columns: list[tuple[str, int, Callable[[dict], str]]], rows: list[dict]) -> str:
    """A text table of benchmark rows: the pipeline's name, then each column's (header, width, cell)."""
    lines = [f"{title:<42} " + " ".join(f"{header:>{width}}" for header, width, _ in columns)]
    lines += [f"{r['pipeline']:<42} " + " ".join(f"{cell(r):>{width}}" for _, width, cell in columns) for r in rows]
    return "\n".join(lines)


def project_pipeline(cfg: Config, data: torch.Tensor, batch_size: int, device: torch.device,
                     compiled: bool = False, graphs: bool = True, world: World = World()):
    """(model, next_batch) of this project's pipeline: resident uint8 tiles, kornia jitter on the
    device, bf16 and a CUDA graph on CUDA (as training sets them up). `batch_size` is per process;
    `data` is this process's shard, which must hold one batch (whole batches are drawn from it)."""
    if len(data) < batch_size:
        fix = "use smaller --batch-sizes" + (" or a smaller --nproc-per-node" if world.size > 1 else "") + ", or more tiles"
        raise Pix2PixError(f"bench: {len(data)} train pairs in this process's shard, fewer than one batch of "
                           f"{batch_size}; {fix}")
    train = dataclasses.replace(cfg.train, compile=compiled, cuda_graphs=graphs and not compiled)
    model = Pix2Pix(dataclasses.replace(cfg, batch_size=batch_size * world.size, train=train), device, world=world)
    jitter = PairJitter(cfg.image_size, cfg.augment.flip)
    it = endless(lambda: batches(data, torch.randperm(len(data), device=data.device)[:len(data) // batch_size * batch_size],
                                 batch_size, device))

    def next_batch():
        return split_pair(jitter(next(it)).contiguous(memory_format=model.engine.layout))

    return model, next_batch


def synthetic_tiles(cfg: Config, count: int, folder: Path) -> Path:
    """Prepare `count` synthetic car pairs at cfg.image_size as tiles, the way the pipeline does."""
    cfg = dataclasses.replace(cfg, dataset="synthetic", data=dataclasses.replace(cfg.data, synthetic_count=count))
    fetch(cfg, folder / "raw")
    build_tiles(folder / "raw", folder / "tiles", cfg)
    return folder / "tiles"
