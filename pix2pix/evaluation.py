"""Scoring a generator: image metrics (kornia), FID, comparison grids, and the evaluate stage."""

from __future__ import annotations

import logging
from pathlib import Path

import kornia.metrics
import torch
import torch.nn.functional as F
from torch import nn

from pix2pix import generator_file
from pix2pix.data.device_data import load_split, split_pair, to_unit
from pix2pix.distributed import pick_device
from pix2pix.fid import MIN_IMAGES, MODES, FidScorer
from pix2pix.generation import generate
from pix2pix.grids import save_grid
from pix2pix.files import cache_dir, write_json

log = logging.getLogger(__name__)


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


def mean_target(pairs_uint8: torch.Tensor, size: int, chunk: int = 64) -> torch.Tensor:
    """The mean target image of the pairs (3, size, size) in [-1, 1]: the best constant guess in L2.
    Train tiles are at the load size: their mean is resized to `size` (resizing is linear, so that
    is the mean of the resized targets)."""
    total = sum(split_pair(to_unit(pairs_uint8[i:i + chunk]))[1].sum(0) for i in range(0, len(pairs_uint8), chunk))
    mean = total / len(pairs_uint8)
    if mean.shape[-1] == size:
        return mean
    return F.interpolate(mean[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0]


def mean_image_l1(mean: torch.Tensor, pairs_uint8: torch.Tensor, prefix: str) -> dict[str, float]:
    """{prefix}_L1_mean_image: the L1 of answering every input with the mean training target, on the
    same scale as {prefix}_L1, so a run shows how far above that floor its model is."""
    targets = split_pair(to_unit(pairs_uint8))[1]
    return {f"{prefix}_L1_mean_image": image_metrics(mean.to(targets.device).expand_as(targets), targets)["L1"]}


def fid_scorer(pairs_uint8: torch.Tensor, kind: str, device, modes: tuple[str, ...] = ("clean",)) -> FidScorer:
    """FID against the targets of these pairs; their features are cached across runs."""
    return FidScorer(split_pair(to_unit(pairs_uint8))[1], kind, device, cache_dir("fid"), modes)


def split_size(pairs_uint8: torch.Tensor, split: str, scorer: FidScorer) -> dict:
    """{split}_images, and whether the split is too small for the scorer's FID to rank runs (said in the log too)."""
    few = scorer.name != "none" and len(pairs_uint8) < MIN_IMAGES
    if few:
        log.warning("the %s split has %d images, fewer than %d: its FID is too noisy to rank runs; compare %s_KID "
                    "against its spread %s_KID_std, or give the split more images", split, len(pairs_uint8),
                    MIN_IMAGES, split, split)
    return {f"{split}_images": len(pairs_uint8), f"{split}_FID_too_few_images": few}


def score(G: nn.Module, pairs_uint8: torch.Tensor, mode: str, scorer: FidScorer, prefix: str, seed: int):
    """G on the pairs: ({prefix}_L1, _PSNR, _SSIM, _FID (clean mode), _FID_legacy_pytorch (if the
    scorer has that mode), _KID, _KID_std and fid_extractor, (inputs, outputs, targets)). The one scoring of a
    generator, for per-epoch validation and for the evaluate stage; `seed` seeds paper mode's dropout."""
    inputs, outputs, targets = generate(G, pairs_uint8, mode, seed)
    metrics = {f"{prefix}_{k}": v for k, v in image_metrics(outputs, targets).items()}
    if fids := scorer(outputs):
        metrics.update({f"{prefix}_{k}": v for k, v in fids.items()})
        metrics["fid_extractor"] = scorer.name
    return metrics, (inputs, outputs, targets)


def evaluate(cfg, model_path: str | Path, best_model_path: str | Path, tiles_dir: str | Path, metrics_path: str | Path,
             grid_path: str | Path, best_grid_path: str | Path) -> dict:
    """The final generator on the test split -> test_* metrics and its grid; the best epoch's
    generator -> best_test_* metrics and its grid; the metrics to metrics_path (JSON)."""
    device = pick_device(cfg.device)
    G, bundle = generator_file.load(model_path, device)
    test = load_split(tiles_dir, "test", bundle["direction"], device, bundle["image_size"])
    train = load_split(tiles_dir, "train", bundle["direction"])
    baseline = mean_image_l1(mean_target(train, bundle["image_size"]), test, "test")
    scorer = fid_scorer(test, cfg.eval.fid_extractor, device, MODES)  # the published protocol beside clean-fid's
    metrics = {**split_metrics(cfg, G, test, scorer, "test", Path(grid_path),
                              f"test split, final generator (epoch {bundle['epoch']})"),
               **split_size(test, "test", scorer), **baseline}
    G, bundle = generator_file.load(best_model_path, device)
    metrics.update(split_metrics(cfg, G, test, scorer, "best_test", Path(best_grid_path),
                                f"test split, best epoch's generator (epoch {bundle['epoch']})"),
                   best_epoch=bundle["epoch"])
    write_json(metrics_path, metrics)
    return metrics


def split_metrics(cfg, G, test: torch.Tensor, scorer: FidScorer, prefix: str, grid_path: Path, title: str) -> dict:
    """score() of G on the test pairs, and a grid of the first samples."""
    metrics, images = score(G, test, cfg.eval.generator_mode, scorer, prefix, cfg.seed)
    save_grid(images, cfg.eval.grid_samples, grid_path, title)
    return metrics
