"""Generating for evaluation, image metrics (kornia), and comparison grids."""

from __future__ import annotations

import contextlib
from pathlib import Path

import kornia.metrics
import numpy as np
import torch
from PIL import Image, ImageDraw

from pix2pix.data.device_data import load_split, pick_device, split_pair, to_uint8, to_unit
from pix2pix.fid import FidScorer
from pix2pix.files import atomic_path, cache_dir, write_json
from pix2pix.models import load_generator


@contextlib.contextmanager
def generation_mode(G: torch.nn.Module, mode: str):
    """paper: as in the paper's test protocol, dropout on and batch statistics of the test batch;
    eval: the usual deterministic eval mode. BatchNorm running stats are restored afterwards."""
    was_training = G.training
    buffers = {k: v.clone() for k, v in G.named_buffers()}
    G.train(mode == "paper")
    try:
        with torch.no_grad():
            yield
    finally:
        G.train(was_training)
        G.load_state_dict({**G.state_dict(), **buffers})


def generate(G: torch.nn.Module, pairs_uint8: torch.Tensor, mode: str, batch_size: int = 1):
    """uint8 (N, 6, H, W) pairs -> (inputs, outputs, targets) float in [-1, 1].

    batch_size 1 in paper mode keeps batch-norm statistics per image (the paper tests at batch 1).
    """
    inputs, targets = split_pair(to_unit(pairs_uint8))
    with generation_mode(G, mode):
        outputs = torch.cat([G(inputs[i:i + batch_size]).float() for i in range(0, len(inputs), batch_size)])
    return inputs, outputs, targets


def image_metrics(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Mean per-image L1, PSNR (dB) and SSIM (11x11 Gaussian window), all on [0, 1] images."""
    fake, real = (outputs.float().clamp(-1, 1) + 1) / 2, (targets.float() + 1) / 2
    psnr = torch.stack([kornia.metrics.psnr(f, r, max_val=1.0) for f, r in zip(fake, real)])
    ssim = kornia.metrics.ssim(fake, real, window_size=11, max_val=1.0).mean(dim=(1, 2, 3))
    return {
        "L1": (fake - real).abs().mean().item(),
        "PSNR": psnr.mean().item(),
        "SSIM": ssim.mean().item(),
    }


COLUMNS = ("input", "output", "target")
HEADER = 28  # pixels: a title line and a line of column names


def save_grid(inputs, outputs, targets, path: str | Path, title: str) -> None:
    """Rows = samples; columns = input | output | target; a header names the columns and `title`."""
    rows = torch.cat([torch.cat([to_uint8(x) for x in (i, o, t)], dim=-1) for i, o, t in zip(inputs, outputs, targets)], dim=-2)
    body = rows.permute(1, 2, 0).cpu().numpy()
    size = inputs.shape[-1]
    canvas = Image.new("RGB", (body.shape[1], body.shape[0] + HEADER), "white")
    canvas.paste(Image.fromarray(np.ascontiguousarray(body)), (0, HEADER))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="black")
    for col, name in enumerate(COLUMNS):
        draw.text((col * size + 4, 15), name, fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def evaluate(cfg, model_path: str | Path, tiles_dir: str | Path, metrics_dir: str | Path,
             best_model_path: str | Path | None = None) -> dict:
    """The final generator on the test split -> metrics/eval.json and metrics/eval_grid.png; the
    best epoch's generator (if given) -> metrics/eval_grid_best.png and best_test_* metrics."""
    device = pick_device(cfg.device)
    G, bundle = load_generator(model_path, device)
    test = load_split(tiles_dir, "test", bundle["direction"], device)
    scorer = FidScorer(split_pair(to_unit(test))[1], cfg.eval.fid_extractor, device, cache_dir("fid"))
    try:
        metrics = {**split_metrics(cfg, G, test, scorer, "test", Path(metrics_dir) / "eval_grid.png",
                                  f"test split, final generator (epoch {bundle.get('epoch', '?')})"),
                   "test_images": len(test)}
        if best_model_path:
            G, bundle = load_generator(best_model_path, device)
            metrics.update(split_metrics(cfg, G, test, scorer, "best_test", Path(metrics_dir) / "eval_grid_best.png",
                                        f"test split, best epoch's generator (epoch {bundle['epoch']})"),
                           best_epoch=bundle["epoch"])
    finally:
        scorer.close()
    write_json(Path(metrics_dir) / "eval.json", metrics)
    return metrics


def split_metrics(cfg, G, test: torch.Tensor, scorer: FidScorer, prefix: str, grid_path: Path, title: str) -> dict:
    """L1, PSNR, SSIM and FID of G on the test pairs, and a grid of the first samples."""
    torch.manual_seed(cfg.seed)  # paper-mode generation keeps dropout on: make it repeatable
    inputs, outputs, targets = generate(G, test, cfg.eval.generator_mode)
    metrics = {f"{prefix}_{k}": v for k, v in image_metrics(outputs, targets).items()}
    if (test_fid := scorer(outputs)) is not None:
        metrics.update({f"{prefix}_FID": test_fid, "fid_extractor": scorer.name})
    n = cfg.eval.grid_samples
    save_grid(inputs[:n], outputs[:n], targets[:n], grid_path, title)
    return metrics
