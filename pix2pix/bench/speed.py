"""Training speed on one device: the classic pix2pix pipeline (a) against this project's (b).

Same device, same process, same generator and discriminator. The reference row (a) is the classic
recipe: PNG files decoded, resized, cropped and flipped with PIL in DataLoader workers,
ToTensor/Normalize, fp32, batch 1. The other rows (b) are this project's: uint8 tiles resident on
the device, kornia jitter on the device, bf16 autocast and channels_last on CUDA, fused Adam.

FLOPs of one training step are counted with torch.utils.flop_counter; MFU divides the achieved
FLOP/s by the device's dense peak for the row's precision (PEAK_TFLOPS).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch
import torchvision.transforms as T
from PIL import Image
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from pix2pix.bench.pipeline import endless, project_pipeline, sync, table, time_it
from pix2pix.config import Config
from pix2pix.data.device_data import load_split
from pix2pix.data.tiles import read_manifest
from pix2pix.distributed import configure, device_name
from pix2pix.errors import Pix2PixError
from pix2pix.losses import GANLoss
from pix2pix.models import build_discriminator, build_generator
from pix2pix.trainer import Pix2Pix

# Dense (no sparsity) tensor-core peaks in TFLOP/s. "fp32" rows run their convolutions as TF32,
# PyTorch's default for cuDNN (torch.backends.cudnn.allow_tf32). First match of the name wins.
PEAK_TFLOPS = (
    ("H100 PCIe", {"bf16": 756.0, "fp32": 378.0}),
    ("H100", {"bf16": 989.4, "fp32": 494.7}),
    ("H200", {"bf16": 989.4, "fp32": 494.7}),
    ("A100", {"bf16": 312.0, "fp32": 156.0}),
    ("L40S", {"bf16": 362.0, "fp32": 183.0}),
)


def peak_tflops(device: torch.device, precision: str) -> float | None:
    name = device_name(device)
    return next((peaks[precision] for key, peaks in PEAK_TFLOPS if key in name), None)


class ClassicPairs(torch.utils.data.Dataset):
    """The reference repo's aligned dataset: decode A|B, resize to load size, shared crop and flip."""

    def __init__(self, files: list[Path], size: int, load_size: int, direction: str):
        self.files, self.size, self.load_size, self.direction = files, size, load_size, direction
        self.to_tensor = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        ab = Image.open(self.files[i]).convert("RGB")
        w, h = ab.size
        x, y = (random.randint(0, self.load_size - self.size) for _ in range(2))
        flip = random.random() < 0.5
        out = []
        for half in (ab.crop((0, 0, w // 2, h)), ab.crop((w // 2, 0, w, h))):
            half = half.resize((self.load_size, self.load_size), Image.BICUBIC).crop((x, y, x + self.size, y + self.size))
            out.append(self.to_tensor(half.transpose(Image.FLIP_LEFT_RIGHT) if flip else half))
        return (out[0], out[1]) if self.direction == "AtoB" else (out[1], out[0])


class ClassicStep:
    """The reference repo's training step (pix2pix_model.py, optimize_parameters): fp32, NCHW,
    per-tensor Adam; D on real and fake pairs, its loss halved, then G on GAN + lambda * L1."""

    def __init__(self, cfg: Config, device: torch.device):
        self.netG, self.netD = build_generator(cfg).to(device), build_discriminator(cfg).to(device)
        o = cfg.optim
        self.optimizer_G = torch.optim.Adam(self.netG.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
        self.optimizer_D = torch.optim.Adam(self.netD.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
        self.criterionGAN, self.criterionL1, self.lambda_L1 = GANLoss(o.gan_mode), torch.nn.L1Loss(), cfg.lambda_l1

    def step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> None:
        fake_B = self.netG(real_A)
        self.netD.requires_grad_(True)
        self.optimizer_D.zero_grad()
        loss_D_fake = self.criterionGAN(self.netD(torch.cat((real_A, fake_B.detach()), 1)), False)
        loss_D_real = self.criterionGAN(self.netD(torch.cat((real_A, real_B), 1)), True)
        ((loss_D_fake + loss_D_real) * 0.5).backward()
        self.optimizer_D.step()
        self.netD.requires_grad_(False)
        self.optimizer_G.zero_grad()
        loss_G_GAN = self.criterionGAN(self.netD(torch.cat((real_A, fake_B), 1)), True)
        (loss_G_GAN + self.criterionL1(fake_B, real_B) * self.lambda_L1).backward()
        self.optimizer_G.step()


def classic_loader(tiles_dir: Path, cfg: Config, workers: int):
    files = [tiles_dir / t for t in read_manifest(tiles_dir).query("split == 'train'")["tile"]]
    load_size = cfg.tile_size("train")  # the tiles are at it: the reference's resize of its source costs more
    return torch.utils.data.DataLoader(ClassicPairs(files, cfg.image_size, load_size, cfg.task_direction), batch_size=1,
                                       shuffle=True, num_workers=workers, drop_last=True, persistent_workers=workers > 0)


_STEP_FLOPS: dict[tuple, int] = {}  # (cfg, device, shape of a, shape of b) -> FLOPs: rows at one batch share it


def step_flops(cfg: Config, device: torch.device, a: torch.Tensor, b: torch.Tensor) -> int:
    """FLOPs of one D + G update (forward and backward) at this batch, counted on an eager model: the
    same count for every row (compilation and graphs change the kernels, not the arithmetic), so it
    is counted once per configuration and input shape."""
    key = (cfg, device, tuple(a.shape), tuple(b.shape))
    if key not in _STEP_FLOPS:
        eager = Pix2Pix(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=False, cuda_graphs=False)),
                        device)
        with FlopCounterMode(display=False) as counter:
            eager.update(a, b)
        _STEP_FLOPS[key] = counter.get_total_flops()
    return _STEP_FLOPS[key]


def measure(name: str, cfg: Config, model: Pix2Pix | ClassicStep, next_batch, batch_size: int, precision: str,
            device: torch.device, steps: int, warmup: int) -> dict:
    """One row: the pipeline alone, then pipeline + training step, then memory and FLOPs."""
    _, data_s = time_it(next_batch, lambda ab: None, device, steps, warmup)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    warmup_s, step_s = time_it(next_batch, lambda ab: model.step(*ab), device, steps, warmup)
    # the peak is read before the FLOP count, whose eager model would add to it
    peak_mem_gb = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    flops = step_flops(cfg, device, *next_batch())
    tflops = flops / step_s / 1e12
    peak = peak_tflops(device, precision)
    return {
        "pipeline": name, "batch": batch_size, "precision": precision,
        "images_per_s": batch_size / step_s, "ms_per_step": 1e3 * step_s,
        "data_images_per_s": batch_size / data_s,
        "peak_mem_gb": peak_mem_gb,
        "tflops": tflops, "mfu": tflops / peak if peak else None,
        "warmup_s": warmup_s,  # cuDNN autotuning, CUDA graph capture, torch.compile
    }


def reference_row(cfg: Config, tiles_dir: Path, device: torch.device, workers: int, steps: int, warmup: int) -> dict:
    """(a) the classic pipeline: PIL in DataLoader workers, fp32, NCHW, batch 1."""
    model = ClassicStep(cfg, device)
    loader = classic_loader(tiles_dir, cfg, workers)
    it = endless(lambda: iter(loader))

    def next_batch():
        a, b = next(it)
        return a.to(device), b.to(device)

    return measure("(a) classic: PIL + DataLoader, fp32", cfg, model, next_batch, 1, "fp32", device, steps, warmup)


def project_row(cfg: Config, data: torch.Tensor, batch_size: int, device: torch.device, steps: int, warmup: int,
                compiled: bool = False, graphs: bool = True) -> dict:
    """(b) this project's pipeline, named after what differs from the defaults."""
    model, next_batch = project_pipeline(cfg, data, batch_size, device, compiled, graphs)
    cuda = device.type == "cuda"
    notes = [note for note, on in (("compiled", compiled), ("no CUDA graph", cuda and not model.engine.graphs and not compiled),
                                   ("host data", data.device.type != device.type)) if on]
    name = "(b) pix2pix-dvc" + "".join(f", {n}" for n in notes)
    return measure(name, cfg, model, next_batch, batch_size, "bf16" if cuda else "fp32", device, steps, warmup)


def profile_summary(cfg: Config, data: torch.Tensor, batch_size: int, device: torch.device, steps: int = 10) -> str:
    """torch.profiler's top operators of this project's step at `batch_size`, run eagerly so that
    each operator shows (a CUDA graph replay would show as one launch): where the GPU time goes."""
    model, next_batch = project_pipeline(cfg, data, batch_size, device)
    batch = next_batch()
    for _ in range(3):
        model.update(*batch)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            model.update(*batch)
        sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60)


def speed_rows(cfg: Config, tiles_dir: Path, device: torch.device, batch_sizes: list[int], steps: int, warmup: int,
               workers: int, compiled: bool = False, host_data: bool = False,
               profile: bool = False) -> tuple[list[dict], str | None]:
    """All rows, the reference first, each with its speedup over the reference; and (with
    `profile`) the profiler summary at the fastest batch size."""
    configure(device)
    rows = [reference_row(cfg, tiles_dir, device, workers, steps, warmup)]
    data = load_split(tiles_dir, "train", cfg.task_direction, device, cfg.tile_size("train"))
    if min(batch_sizes) > len(data):  # no (b) row at any batch size: nothing to pick the fastest from
        raise Pix2PixError(f"bench: {len(data)} train pairs, fewer than the smallest batch; use smaller --batch-sizes")
    for bs in batch_sizes:
        if bs > len(data):
            break
        try:
            rows.append(project_row(cfg, data, bs, device, steps, warmup))
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
    fastest = max(rows[1:], key=lambda r: r["images_per_s"])["batch"]
    extra = list(dict.fromkeys([1, fastest]))
    if device.type == "cuda":  # what the CUDA graph buys
        rows += [project_row(cfg, data, bs, device, steps, warmup, graphs=False) for bs in extra]
    if compiled:
        rows += [project_row(cfg, data, bs, device, steps, warmup, compiled=True) for bs in extra]
    if host_data and device.type == "cuda":
        rows.append(project_row(cfg, data.cpu().pin_memory(), fastest, device, steps, warmup))
    for row in rows:
        row["speedup"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows, profile_summary(cfg, data, fastest, device) if profile else None


def format_table(rows: list[dict], device: torch.device) -> str:
    def maybe(value, spec):
        return "n/a" if value is None else format(value, spec)

    columns = [
        ("batch", 5, lambda r: str(r["batch"])), ("prec", 5, lambda r: r["precision"]),
        ("img/s", 9, lambda r: f"{r['images_per_s']:.1f}"), ("ms/step", 8, lambda r: f"{r['ms_per_step']:.2f}"),
        ("data img/s", 10, lambda r: f"{r['data_images_per_s']:.1f}"), ("peak GB", 7, lambda r: maybe(r["peak_mem_gb"], ".2f")),
        ("TFLOP/s", 8, lambda r: f"{r['tflops']:.2f}"), ("MFU", 6, lambda r: maybe(r["mfu"], ".1%")),
        ("speedup", 7, lambda r: f"{r['speedup']:.2f}x"), ("warm-up s", 9, lambda r: f"{r['warmup_s']:.1f}"),
    ]
    return f"device: {device_name(device)}, torch {torch.__version__}\n" + table("pipeline", columns, rows)
