"""Generating for evaluation, image metrics (kornia), and comparison grids."""

from __future__ import annotations

from pathlib import Path

import kornia.metrics
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from PIL import Image, ImageDraw

from pix2pix import generator_file
from pix2pix.data.device_data import load_split, split_pair, to_uint8, to_unit
from pix2pix.distributed import pick_device
from pix2pix.fid import MODES, FidScorer
from pix2pix.files import atomic_path, cache_dir, write_json


class PerImageStatistics:
    """Paper-mode generation of a whole batch with the outputs that one train-mode pass per image
    gives (the paper tests at batch 1): batch norm on one image is instance normalisation with the
    batch norm's affine parameters, and each image's dropout masks come from its own generator.

    G runs in eval mode, so its running statistics are not updated and its dropout is off; forward
    hooks replace each batch norm's output by the per-image normalisation and apply the masks."""

    def __init__(self, G: nn.Module):
        self.generators: list[torch.Generator] = []
        self.handles = [m.register_forward_hook(self.normalise) for m in G.modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.handles += [m.register_forward_hook(self.drop) for m in G.modules() if isinstance(m, nn.Dropout)]

    @staticmethod
    def normalise(bn, args, out):
        # into batch norm's own output: its memory format (distributed.memory_format) decides how
        # dropout lays out masks
        return out.copy_(F.instance_norm(args[0], weight=bn.weight, bias=bn.bias, eps=bn.eps))

    def drop(self, dropout, args, out):
        x = args[0]  # empty_like and bernoulli_ as torch's own CPU dropout draws them, image by image
        keep = torch.cat([torch.empty_like(x[:1]).bernoulli_(1 - dropout.p, generator=g) for g in self.generators])
        return x * keep.div_(1 - dropout.p)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def apply(G: nn.Module, inputs: torch.Tensor, mode: str, batch_size: int = 16, seed: int = 0) -> torch.Tensor:
    """G on float inputs, `batch_size` at a time; the outputs do not depend on the batch size.

    eval: the usual deterministic eval mode. paper: as the paper tests, dropout on and each image's
    own batch statistics; image i's dropout masks are drawn from a generator seeded with seed + i,
    so an image gets the same output in any batch, and the global random state is not touched."""
    was_training = G.training
    G.eval()
    hooks = PerImageStatistics(G) if mode == "paper" else None
    try:
        outputs = []
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                batch = inputs[start:start + batch_size]
                if hooks:
                    hooks.generators = [torch.Generator(batch.device).manual_seed(seed + start + i)
                                        for i in range(len(batch))]
                outputs.append(G(batch).float())
        return torch.cat(outputs)
    finally:
        if hooks:
            hooks.close()
        G.train(was_training)


def generate(G: nn.Module, pairs_uint8: torch.Tensor, mode: str, seed: int):
    """uint8 (N, 6, H, W) pairs -> (inputs, outputs, targets) float in [-1, 1]."""
    inputs, targets = split_pair(to_unit(pairs_uint8))
    return inputs, apply(G, inputs, mode, seed=seed), targets


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


def score(G: nn.Module, pairs_uint8: torch.Tensor, mode: str, scorer: FidScorer, prefix: str, seed: int):
    """G on the pairs: ({prefix}_L1, _PSNR, _SSIM, _FID (clean mode), _FID_legacy_pytorch (if the
    scorer has that mode) and fid_extractor, (inputs, outputs, targets)). The one scoring of a
    generator, for per-epoch validation and for the evaluate stage; `seed` seeds paper mode's dropout."""
    inputs, outputs, targets = generate(G, pairs_uint8, mode, seed)
    metrics = {f"{prefix}_{k}": v for k, v in image_metrics(outputs, targets).items()}
    if fids := scorer(outputs):
        metrics.update({f"{prefix}_FID" + ("" if m == "clean" else f"_{m}"): v for m, v in fids.items()})
        metrics["fid_extractor"] = scorer.name
    return metrics, (inputs, outputs, targets)


COLUMNS = ("input", "output", "target")
HEADER = 28  # pixels: a title line and a line of column names


def save_grid(images: tuple, samples: int, path: str | Path, title: str) -> None:
    """The first `samples` of (inputs, outputs, targets): rows = samples, columns = input | output |
    target; a header names the columns and `title`."""
    inputs, outputs, targets = (x[:samples] for x in images)
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
               "test_images": len(test), **baseline}
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
