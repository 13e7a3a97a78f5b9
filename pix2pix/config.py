"""params.yaml -> a typed, validated Config.

Every key must be present and of the right type; unknown keys are refused. Errors name the key
and the allowed values, and are raised before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from pix2pix.data.sources import DATASETS
from pix2pix.errors import Pix2PixError


@dataclass(frozen=True)
class DataConfig:
    path: str  # the folder prepare reads: data/raw (the download stage's) or your own (dataset: folder)
    layout: Literal["auto", "ab", "paired", "labels"]  # dataset: folder; see data/pairs.py
    palette: str  # dataset: folder, class-id label maps: cars, ade20k or a JSON file in data.path
    synthetic_count: int  # synthetic dataset: image/mask pairs generated (train + test)
    val_fraction: float  # share of train carved out as val when the source has no val split
    mirror: str  # folder holding a copy of the dataset (its archive or extracted folder), tried first
    fit: Literal["crop", "pad"]  # non-square sources: resize shorter side + centre crop, or pad


@dataclass(frozen=True)
class ModelConfig:
    ngf: int
    ndf: int
    norm: Literal["batch", "instance"]
    d_layers: int
    dropout: bool


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    beta1: float
    beta2: float
    decay_share: float  # share of the epochs (rounded down) over which the LR decays linearly
    gan_mode: Literal["vanilla", "lsgan"]


@dataclass(frozen=True)
class AugmentConfig:
    load_scale: float
    flip: bool


@dataclass(frozen=True)
class TrainConfig:
    log_every: int
    threads: int
    device_data_gb: float
    compile: bool
    cuda_graphs: bool
    precision: Literal["bf16", "fp32"]  # on CUDA; CPU trains in fp32 (training_precision)
    checkpoint_every: int
    resume: Literal["auto", "never"]
    max_nonfinite_steps: int
    nproc_per_node: int  # processes (GPUs) per machine; > 1 launches torchrun
    nnodes: int  # machines; > 1 needs rdzv_endpoint
    rdzv_endpoint: str  # host:port on machine 0 (the one running dvc repro) when nnodes > 1
    dist_timeout_s: float  # a collective waiting longer than this fails the run


@dataclass(frozen=True)
class EvalConfig:
    grid_samples: int
    generator_mode: Literal["paper", "eval"]
    fid_extractor: Literal["auto", "clean-fid", "offline", "none"]


@dataclass(frozen=True)
class MlflowConfig:
    enabled: bool
    tracking_uri: str
    experiment: str
    registered_model: str  # "" or the registry name each run's model becomes a new version of


@dataclass(frozen=True)
class Config:
    dataset: str
    direction: Literal["auto", "AtoB", "BtoA"]
    image_size: int
    epochs: int
    batch_size: int
    lambda_l1: float
    seed: int
    device: str
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig
    augment: AugmentConfig
    train: TrainConfig
    eval: EvalConfig
    mlflow: MlflowConfig

    @property
    def task_direction(self) -> str:
        """`direction`, with `auto` read as the dataset's usual task (sources.py)."""
        return DATASETS[self.dataset].direction if self.direction == "auto" else self.direction

    def tile_size(self, split: str) -> int:
        """Side of a split's tiles: the load size for train (image_size x augment.load_scale, which
        the jitter random-crops back), image_size for val and test."""
        return round(self.image_size * self.augment.load_scale) if split == "train" else self.image_size


# Params that say how a run is executed or reported, not what it computes. No DVC stage depends on
# them (changing one re-runs nothing, tests/test_stage_deps.py checks dvc.yaml against this list),
# and a checkpoint may be resumed under other values of them. `device` is here although CPU and GPU
# kernels round differently: what reproduces where is in docs/reproducibility.md.
EXECUTION_ONLY = ("device", "train.log_every", "train.threads", "train.checkpoint_every",
                  "train.device_data_gb", "train.compile", "train.cuda_graphs", "train.resume",
                  "train.max_nonfinite_steps", "train.nproc_per_node", "train.nnodes", "train.rdzv_endpoint",
                  "train.dist_timeout_s", "mlflow.enabled", "mlflow.tracking_uri", "mlflow.experiment",
                  "mlflow.registered_model")


def load_config(path: str | Path = "params.yaml", overrides: dict | None = None) -> Config:
    """Read and validate params.yaml; `overrides` maps dotted keys to values (for tests and tools)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise Pix2PixError(f"{path}: not found; run from the project root or pass the path") from None
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise Pix2PixError(f"{path}: malformed YAML{where}; fix the syntax") from None
    if not isinstance(raw, dict):
        raise Pix2PixError(f"{path}: expected a mapping of keys to values at the top level")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value, path)
    cfg = _build(Config, raw, prefix="", source=path)
    _check_values(cfg, path)
    return cfg


def flatten(cfg: Config) -> dict[str, object]:
    """{"model.ngf": 64, ...}: every param under its dotted name."""
    out: dict[str, object] = {}

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                out[f"{prefix}{f.name}"] = value

    walk(cfg, "")
    return out


def result_params(cfg_or_flat) -> dict[str, object]:
    """Every param but the execution-only ones: what a run's results depend on."""
    flat = flatten(cfg_or_flat) if isinstance(cfg_or_flat, Config) else cfg_or_flat
    return {k: v for k, v in flat.items() if k not in EXECUTION_ONLY}


def check_data_path(cfg: Config, outputs: dict[str, str]) -> None:
    """Your own folder (dataset: folder) must not overlap a stage's output (outputs: path -> stage),
    which DVC deletes before the stage runs: it would take your pairs with it."""
    if cfg.dataset != "folder":
        return
    mine = Path(cfg.data.path)
    for out, stage in outputs.items():
        if mine == Path(out) or Path(out) in mine.parents or mine in Path(out).parents:
            raise Pix2PixError(f"data.path is {cfg.data.path}, which overlaps {out}, the {stage} stage's output "
                               "(DVC deletes it before the stage runs); keep your pairs elsewhere, such as data/own")


def processes(cfg: Config) -> int:
    """Training processes: train.nproc_per_node on each of train.nnodes machines."""
    return cfg.train.nproc_per_node * cfg.train.nnodes


def training_precision(cfg: Config, device_type: str) -> str:
    """What a run trains in: train.precision on CUDA (bf16 autocast, or fp32 with cuDNN's default
    TF32 convolutions, as the reference runs on recent GPUs); fp32 on CPU whatever it says, where
    bf16 autocast is slower and not what the committed runs used."""
    return cfg.train.precision if device_type == "cuda" else "fp32"


def decay_epochs(cfg: Config) -> int:
    """Epochs at the end over which the LR decays: optim.decay_share of them, rounded down."""
    return math.floor(cfg.epochs * cfg.optim.decay_share + 1e-9)  # 1e-9: 0.29 * 100 is 28.999...


def valid_image_size(size: int) -> bool:
    """A power of two >= 32: the U-Net halves it level by level down to 1x1, at least 5 levels."""
    return size >= 32 and size & (size - 1) == 0


def _set_dotted(raw: dict, dotted: str, value, source: Path) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
        raise Pix2PixError(f"{source}: cannot override '{dotted}': no such key")
    node[leaf] = value


def _build(cls, raw, prefix: str, source: Path):
    if not isinstance(raw, dict):
        raise Pix2PixError(f"{source}: '{prefix.rstrip('.')}' must be a mapping of keys")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        near = difflib.get_close_matches(str(unknown[0]), names, n=1)
        hint = f"did you mean '{prefix}{near[0]}'? " if near else ""
        raise Pix2PixError(f"{source}: unknown key '{prefix}{unknown[0]}'; {hint}allowed here: {', '.join(names)}")
    values = {}
    for name in names:
        key = f"{prefix}{name}"
        if name not in raw:
            raise Pix2PixError(f"{source}: missing key '{key}'; add it (see docs/params.md)")
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, raw[name], f"{key}.", source)
        else:
            values[name] = _coerce(raw[name], kind, key, source)
    return cls(**values)


def _coerce(value, kind, key: str, source: Path):
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise Pix2PixError(f"{source}: '{key}' is {value!r}; allowed: {', '.join(choices)}")
        return value
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[kind]
    if not ok:
        raise Pix2PixError(f"{source}: '{key}' must be {kind.__name__}, got {value!r}")
    return float(value) if kind is float else value


def _check_values(cfg: Config, source: Path) -> None:
    def need(ok: bool, key: str, rule: str, value) -> None:
        if not ok:
            raise Pix2PixError(f"{source}: '{key}' is {value!r}; it must be {rule}")

    size = cfg.image_size
    need(cfg.dataset in DATASETS, "dataset", f"one of {', '.join(DATASETS)}", cfg.dataset)
    need(valid_image_size(size), "image_size", "a power of two >= 32 (the U-Net halves it to 1x1)", size)
    need(cfg.epochs >= 1, "epochs", ">= 1", cfg.epochs)
    need(cfg.batch_size >= 1, "batch_size", ">= 1", cfg.batch_size)
    need(cfg.lambda_l1 >= 0, "lambda_l1", ">= 0", cfg.lambda_l1)
    need(cfg.seed >= 0, "seed", ">= 0", cfg.seed)
    need(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"), "device", "auto, cpu, cuda or cuda:N", cfg.device)
    need(cfg.dataset != "folder" or cfg.data.path.strip() not in ("", "."), "data.path",
         "the folder of your pairs when dataset is folder (for example data/own)", cfg.data.path)
    need(not any(c.isspace() for c in cfg.data.path), "data.path", "a path without spaces (DVC splits the command "
         "that names it)", cfg.data.path)
    need(cfg.data.synthetic_count >= 4, "data.synthetic_count", ">= 4", cfg.data.synthetic_count)
    need(0 <= cfg.data.val_fraction < 1, "data.val_fraction", "in [0, 1)", cfg.data.val_fraction)
    need(cfg.model.ngf >= 1, "model.ngf", ">= 1", cfg.model.ngf)
    need(cfg.model.ndf >= 1, "model.ndf", ">= 1", cfg.model.ndf)
    need(cfg.model.d_layers >= 1, "model.d_layers", ">= 1", cfg.model.d_layers)
    need(cfg.optim.lr > 0, "optim.lr", "> 0", cfg.optim.lr)
    need(0 <= cfg.optim.beta1 < 1, "optim.beta1", "in [0, 1)", cfg.optim.beta1)
    need(0 <= cfg.optim.beta2 < 1, "optim.beta2", "in [0, 1)", cfg.optim.beta2)
    need(0 <= cfg.optim.decay_share <= 1, "optim.decay_share", "in [0, 1] (0.5: the paper's 100 + 100)", cfg.optim.decay_share)
    need(cfg.augment.load_scale >= 1, "augment.load_scale", ">= 1 (resize up, then crop back)", cfg.augment.load_scale)
    need(cfg.train.log_every >= 1, "train.log_every", ">= 1", cfg.train.log_every)
    need(cfg.train.threads >= 0, "train.threads", ">= 0 (0: torch's default)", cfg.train.threads)
    need(not (cfg.train.compile and cfg.train.cuda_graphs), "train.compile", "false when train.cuda_graphs is true "
         "(pick one way to cut launch overhead)", cfg.train.compile)
    need(cfg.train.max_nonfinite_steps >= 0, "train.max_nonfinite_steps", ">= 0", cfg.train.max_nonfinite_steps)
    need(cfg.train.checkpoint_every >= 1, "train.checkpoint_every", ">= 1", cfg.train.checkpoint_every)
    need(cfg.train.device_data_gb >= 0, "train.device_data_gb", ">= 0 (0: keep data in host memory)", cfg.train.device_data_gb)
    world = processes(cfg)
    need(cfg.train.nproc_per_node >= 1, "train.nproc_per_node", ">= 1", cfg.train.nproc_per_node)
    need(cfg.train.nnodes >= 1, "train.nnodes", ">= 1", cfg.train.nnodes)
    need(cfg.train.nnodes == 1 or ":" in cfg.train.rdzv_endpoint, "train.rdzv_endpoint",
         "host:port of one of the machines when train.nnodes > 1", cfg.train.rdzv_endpoint)
    need(cfg.train.dist_timeout_s > 0, "train.dist_timeout_s", "> 0", cfg.train.dist_timeout_s)
    need(cfg.batch_size % world == 0, "batch_size", f"a multiple of the {world} processes "
         "(train.nproc_per_node x train.nnodes): it is the global batch, split evenly", cfg.batch_size)
    need(world == 1 or cfg.device in ("auto", "cuda", "cpu"), "device", "auto, cuda or cpu when several processes "
         "train (each takes the GPU of its local rank)", cfg.device)
    need(cfg.eval.grid_samples >= 1, "eval.grid_samples", ">= 1", cfg.eval.grid_samples)
