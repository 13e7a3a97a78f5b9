"""`pix2pix bench`: this project's training step against the classic pix2pix pipeline.

Same device, same process, same generator and discriminator. The reference row (a) is the classic
recipe: PNG files decoded, resized, cropped and flipped with PIL in DataLoader workers,
ToTensor/Normalize, fp32, batch 1. The other rows (b) are this project's: uint8 tiles resident on
the device, kornia jitter on the device, bf16 autocast and channels_last on CUDA, fused Adam.

FLOPs of one training step are counted with torch.utils.flop_counter; MFU divides the achieved
FLOP/s by the device's dense peak for the row's precision (PEAK_TFLOPS).
"""

from __future__ import annotations

import dataclasses
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision.transforms as T
from PIL import Image
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from pix2pix.config import Config, load_config
from pix2pix.data.augment import PairJitter
from pix2pix.data.device_data import batches, load_split, split_pair
from pix2pix.data.sources import direction_of
from pix2pix.data.synthetic import write_dataset
from pix2pix.data.tiles import build_tiles, read_manifest, tile_size
from pix2pix.distributed import World, device_name, epoch_order, join, launch, leave, norm_for, pick_device
from pix2pix.errors import Pix2PixError, exit_on_error
from pix2pix.files import write_json
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

    update = step  # already eager: step_flops counts it as it is


def classic_loader(tiles_dir: Path, cfg: Config, workers: int):
    files = [tiles_dir / t for t in read_manifest(tiles_dir).query("split == 'train'")["tile"]]
    load_size = tile_size(cfg, "train")  # the tiles are at it: the reference's resize of its source costs more
    return torch.utils.data.DataLoader(ClassicPairs(files, cfg.image_size, load_size, direction_of(cfg.dataset, cfg.direction)), batch_size=1, shuffle=True,
                                       num_workers=workers, drop_last=True, persistent_workers=workers > 0)


def endless(make_iter):
    while True:
        yield from make_iter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(model: Pix2Pix | ClassicStep, a: torch.Tensor, b: torch.Tensor) -> int:
    """FLOPs of one D + G update (forward and backward), counted on the eager modules."""
    if isinstance(model, ClassicStep):
        with FlopCounterMode(display=False) as counter:
            model.update(a, b)
        return counter.get_total_flops()
    wrapped = model.g_fwd, model.d_fwd, model.d_judge
    model.g_fwd, model.d_fwd, model.d_judge = model.G, model.D, model.D
    try:
        with FlopCounterMode(display=False) as counter:
            model.update(a, b)
    finally:
        model.g_fwd, model.d_fwd, model.d_judge = wrapped
    return counter.get_total_flops()


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


def measure(name: str, model: Pix2Pix | ClassicStep, next_batch, batch_size: int, precision: str, device: torch.device,
            steps: int, warmup: int) -> dict:
    """One row: the pipeline alone, then pipeline + training step, then FLOPs and memory."""
    _, data_s = time_it(next_batch, lambda ab: None, device, steps, warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup_s, step_s = time_it(next_batch, lambda ab: model.step(*ab), device, steps, warmup)
    flops = step_flops(model, *next_batch())
    tflops = flops / step_s / 1e12
    peak = peak_tflops(device, precision)
    return {
        "pipeline": name, "batch": batch_size, "precision": precision,
        "images_per_s": batch_size / step_s, "ms_per_step": 1e3 * step_s,
        "data_images_per_s": batch_size / data_s,
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
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

    return measure("(a) classic: PIL + DataLoader, fp32", model, next_batch, 1, "fp32", device, steps, warmup)


def project_pipeline(cfg: Config, data: torch.Tensor, batch_size: int, device: torch.device,
                     compiled: bool = False, graphs: bool = True, world: World = World()):
    """(model, next_batch) of this project's pipeline: resident uint8 tiles, kornia jitter on the
    device, bf16 and a CUDA graph on CUDA (as train.py sets them up). `batch_size` is per process."""
    train = dataclasses.replace(cfg.train, compile=compiled, cuda_graphs=graphs and not compiled)
    model = Pix2Pix(dataclasses.replace(cfg, batch_size=batch_size * world.size, train=train), device, world=world)
    jitter = PairJitter(cfg.image_size, cfg.augment.flip)
    it = endless(lambda: batches(data, torch.randperm(len(data), device=data.device)[:len(data) // batch_size * batch_size],
                                 batch_size, device))

    def next_batch():
        return split_pair(jitter(next(it)).contiguous(memory_format=model.layout))

    return model, next_batch


def project_row(cfg: Config, data: torch.Tensor, batch_size: int, device: torch.device, steps: int, warmup: int,
                compiled: bool = False, graphs: bool = True) -> dict:
    """(b) this project's pipeline, named after what differs from the defaults."""
    model, next_batch = project_pipeline(cfg, data, batch_size, device, compiled, graphs)
    cuda = device.type == "cuda"
    notes = [note for note, on in (("compiled", compiled), ("no CUDA graph", cuda and not model.graphs and not compiled),
                                   ("host data", data.device.type != device.type)) if on]
    name = "(b) pix2pix-dvc" + "".join(f", {n}" for n in notes)
    return measure(name, model, next_batch, batch_size, "bf16" if cuda else "fp32", device, steps, warmup)


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


def run_bench(cfg: Config, tiles_dir: Path, device: torch.device, batch_sizes: list[int], steps: int, warmup: int,
              workers: int, compiled: bool = False, host_data: bool = False,
              profile: bool = False) -> tuple[list[dict], str | None]:
    """All rows, the reference first, each with its speedup over the reference; and (with
    `profile`) the profiler summary at the fastest batch size."""
    torch.backends.cudnn.benchmark = device.type == "cuda"
    rows = [reference_row(cfg, tiles_dir, device, workers, steps, warmup)]
    data = load_split(tiles_dir, "train", direction_of(cfg.dataset, cfg.direction), device, tile_size(cfg, "train"))
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


def scaling_rows(params: Path, overrides: dict, tiles: Path, batch: int, nproc: int, steps: int,
                 warmup: int) -> list[dict]:
    """Data-parallel scaling: this pipeline at `batch` per process under torchrun, on 1 process and on
    `nproc`; scaling = images/s on N / (N x images/s on 1). Both eager (no CUDA graph), so that
    only the processes differ. CPU processes use instance norm (SyncBatchNorm needs GPUs)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="pix2pix-scaling-") as tmp:
        for n in dict.fromkeys([1, nproc]):
            spec = {"params": str(params), "tiles": str(tiles), "batch": batch, "steps": steps, "warmup": warmup,
                    "out": f"{tmp}/row{n}.json",
                    "overrides": {**overrides, "batch_size": batch * n, "train.nproc_per_node": n, "train.nnodes": 1}}
            Path(f"{tmp}/spec{n}.json").write_text(json.dumps(spec))
            launch(load_config(params, spec["overrides"]), "-m", "pix2pix.bench", f"{tmp}/spec{n}.json")
            rows.append(json.loads(Path(spec["out"]).read_text()))
    for row in rows:
        row["scaling"] = row["images_per_s"] / (row["processes"] * rows[0]["images_per_s"])
    return rows


@exit_on_error
def scaling_worker(spec_path: str) -> None:
    """One process of a scaling row, started by torchrun: times the steps on its shard of the
    tiles; the gradient all-reduce in every step keeps the processes in step, so rank 0's time is the run's."""
    spec = json.loads(Path(spec_path).read_text())
    cfg = load_config(spec["params"], spec["overrides"])
    world, device = join(cfg)
    try:
        torch.backends.cudnn.benchmark = device.type == "cuda"
        data = load_split(spec["tiles"], "train", direction_of(cfg.dataset, cfg.direction))
        shard = data[epoch_order(len(data), 0, cfg.seed, world)].to(device)
        model, next_batch = project_pipeline(cfg, shard, spec["batch"], device, graphs=False, world=world)
        warmup_s, step_s = time_it(next_batch, lambda ab: model.step(*ab), device, spec["steps"], spec["warmup"])
        if world.main:
            write_json(spec["out"], {"pipeline": f"(b) pix2pix-dvc, DDP, {cfg.model.norm} norm", "processes": world.size,
                                     "batch_per_process": spec["batch"], "images_per_s": world.size * spec["batch"] / step_s,
                                     "ms_per_step": 1e3 * step_s, "warmup_s": warmup_s})
    finally:
        leave(world)


def format_scaling(rows: list[dict]) -> str:
    lines = [f"{'data-parallel scaling':<42} {'procs':>5} {'batch/proc':>10} {'img/s':>9} {'ms/step':>8} {'scaling':>8}"]
    lines += [f"{r['pipeline']:<42} {r['processes']:>5} {r['batch_per_process']:>10} {r['images_per_s']:>9.1f} "
              f"{r['ms_per_step']:>8.2f} {100 * r['scaling']:>7.0f}%" for r in rows]
    return "\n".join(lines)


def concurrent_rows(params: Path, overrides: dict, tiles: Path, counts: list[int], steps: int,
                    warmup: int) -> list[dict]:
    """Sweeps on one device: N independent batch-1 trainings at once, each in its own process (as
    `dvc queue start -j N` runs experiments), for each N in `counts`. The processes warm up, wait
    for each other, then time `steps` together; the row sums their images/s and takes the largest
    peak memory of one (CUDA's allocator peak; the resident set on CPU)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="pix2pix-concurrent-") as tmp:
        for n in counts:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            spec = folder / "spec.json"
            write_json(spec, {"params": str(params), "overrides": overrides, "tiles": str(tiles), "steps": steps,
                              "warmup": warmup, "processes": n})
            run_together([[sys.executable, "-m", "pix2pix.bench", str(spec), str(i)] for i in range(n)])
            each = [json.loads((folder / f"{i}.json").read_text()) for i in range(n)]
            rows.append({"pipeline": "(b) pix2pix-dvc, N trainings at once", "processes": n, "batch_per_process": 1,
                         "images_per_s": sum(r["images_per_s"] for r in each),
                         "per_process_images_per_s": [r["images_per_s"] for r in each],
                         "peak_mem_gb_per_process": max(r["peak_mem_gb"] for r in each),
                         "warmup_s": max(r["warmup_s"] for r in each)})
    for row in rows:
        row["vs_one"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows


def run_together(commands: list[list[str]]) -> None:
    """Start every command and wait for all; when one fails, stop the others (they wait for it)."""
    procs = [subprocess.Popen(cmd) for cmd in commands]
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [code for code in codes if code]
            if failed:
                raise Pix2PixError(f"bench: a concurrent training failed (exit {failed[0]}; its error is above)")
            if all(code == 0 for code in codes):
                return
            time.sleep(0.2)  # a polling interval
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@exit_on_error
def concurrent_worker(spec_path: str, index: str) -> None:
    """One of a concurrent row's trainings: warm up, wait until all are warm, time the steps."""
    spec, folder = json.loads(Path(spec_path).read_text()), Path(spec_path).parent
    cfg = load_config(spec["params"], spec["overrides"])
    device = pick_device(cfg.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    data = load_split(spec["tiles"], "train", direction_of(cfg.dataset, cfg.direction), device, tile_size(cfg, "train"))
    model, next_batch = project_pipeline(cfg, data, 1, device)
    warmup_s, _ = time_it(next_batch, lambda ab: model.step(*ab), device, 1, spec["warmup"])  # and one step
    (folder / f"{index}.ready").touch()
    deadline = time.monotonic() + 600
    while len(list(folder.glob("*.ready"))) < spec["processes"]:  # the others still warming up
        if time.monotonic() > deadline:
            raise Pix2PixError("bench: the other concurrent trainings did not start within 600 s")
        time.sleep(0.01)
    _, step_s = time_it(next_batch, lambda ab: model.step(*ab), device, spec["steps"], 0)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux: KiB
    write_json(folder / f"{index}.json", {"images_per_s": 1 / step_s, "peak_mem_gb": peak / 2**30,
                                         "warmup_s": warmup_s})


def format_concurrent(rows: list[dict]) -> str:
    lines = [f"{'trainings at once (one device)':<42} {'procs':>5} {'img/s':>9} {'vs one':>7} {'GB/proc':>8}"]
    lines += [f"{r['pipeline']:<42} {r['processes']:>5} {r['images_per_s']:>9.1f} {r['vs_one']:>6.2f}x "
              f"{r['peak_mem_gb_per_process']:>8.2f}" for r in rows]
    return "\n".join(lines)


def synthetic_tiles(cfg: Config, count: int, folder: Path) -> Path:
    """Prepare `count` synthetic car pairs at cfg.image_size as tiles, the way the pipeline does."""
    write_dataset(folder / "raw", count, cfg.seed)
    build_tiles(folder / "raw", folder / "tiles", dataclasses.replace(cfg, dataset="synthetic"))
    return folder / "tiles"


def format_table(rows: list[dict], device: torch.device) -> str:
    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"

    head = f"{'pipeline':<42} {'batch':>5} {'prec':>5} {'img/s':>9} {'ms/step':>8} {'data img/s':>10} " \
           f"{'peak GB':>7} {'TFLOP/s':>8} {'MFU':>6} {'speedup':>7} {'warm-up s':>9}"
    lines = [f"device: {device_name(device)}, torch {torch.__version__}", head]
    for r in rows:
        lines.append(f"{r['pipeline']:<42} {r['batch']:>5} {r['precision']:>5} {r['images_per_s']:>9.1f} "
                     f"{r['ms_per_step']:>8.2f} {r['data_images_per_s']:>10.1f} {fmt(r['peak_mem_gb'], '7.2f'):>7} "
                     f"{r['tflops']:>8.2f} {pct(r['mfu']):>6} {r['speedup']:>6.2f}x {r['warmup_s']:>9.1f}")
    return "\n".join(lines)


def bench(cfg: Config, device: torch.device, batch_sizes: list[int], steps: int, warmup: int, workers: int,
          tiles_dir: Path | None = None, count: int = 64, compiled: bool = False, host_data: bool = False,
          profile: bool = False, scaling: tuple[Path, dict, int] | None = None,
          concurrent: tuple[Path, dict, list[int]] | None = None):
    """run_bench on `tiles_dir`, or on synthetic tiles made for the occasion; with `scaling`
    (params file, its overrides, processes) also the scaling rows at the fastest batch size; with
    `concurrent` (params file, its overrides, counts) the rows of N trainings at once.
    Returns (rows, profile summary or None, scaling rows, concurrent rows)."""
    nproc = scaling[2] if scaling else 1
    with tempfile.TemporaryDirectory(prefix="pix2pix-bench-") as tmp:
        count = max(count, round(1.5 * max(batch_sizes) * nproc) + 8)  # enough train tiles for the largest batch
        tiles = tiles_dir or synthetic_tiles(cfg, count, Path(tmp))
        rows, summary = run_bench(cfg, tiles, device, batch_sizes, steps, warmup, workers, compiled, host_data, profile)
        scaled = []
        if scaling:
            params, overrides, nproc = scaling
            overrides = {**overrides, "model.norm": norm_for(cfg.model.norm, nproc, device.type)}
            fastest = max(rows[1:], key=lambda r: r["images_per_s"])["batch"]
            scaled = scaling_rows(params, overrides, tiles, fastest, nproc, steps, warmup)
        together = concurrent_rows(*concurrent[:2], tiles, concurrent[2], steps, warmup) if concurrent else []
        return rows, summary, scaled, together


if __name__ == "__main__":
    if len(sys.argv) == 3:  # python -m pix2pix.bench SPEC.json INDEX: one of a concurrent row's trainings
        concurrent_worker(*sys.argv[1:])
    else:  # torchrun -m pix2pix.bench SPEC.json: one process of a scaling row
        scaling_worker(sys.argv[1])
