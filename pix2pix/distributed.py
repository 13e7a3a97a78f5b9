"""Data-parallel training over several processes (one per GPU, or several CPU processes), on one
machine or many, with PyTorch's own engine.

torchrun starts and watches the processes (one that dies stops them all), torch.distributed
connects them (NCCL between GPUs, gloo on CPU), DDP averages the gradients, SyncBatchNorm takes
batch statistics over the global batch, DistributedSampler deals each epoch's samples. This
module only wires them to params.yaml: `train.nproc_per_node` and `train.nnodes` say how many
processes, `batch_size` stays the global batch (each process takes batch_size / world).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pix2pix.config import Config, processes
from pix2pix.errors import Pix2PixError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; World() is a plain single-process run."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:  # the one process that writes checkpoints, metrics, grids and MLflow
        return self.rank == 0


def pick_device(name: str) -> torch.device:
    """params `device`: `auto` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise Pix2PixError(f"params.yaml: device is '{name}' but no CUDA GPU is visible; set device: auto or cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H100 80GB HBM3)`: what runs, for logs, metrics and benchmarks."""
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def configure(device: torch.device) -> None:
    """cuDNN autotuning on CUDA: a run's shapes never change, so the fastest kernels found on the
    first steps serve them all (GPU results are not bit-reproducible anyway: bf16, docs/reproducibility.md)."""
    torch.backends.cudnn.benchmark = device.type == "cuda"


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout of weights and batches in training: channels_last on CUDA, where cuDNN's NHWC
    kernels feed the tensor cores; the default layout on CPU, where fused Adam would copy every
    channels_last weight to a contiguous one and back on each step (docs/performance.md)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


CPU_NORM = "instance"  # what several CPU processes must use: SyncBatchNorm needs GPUs


def norm_for(norm: str, count: int, device_type: str) -> str:
    """The norm `count` processes on `device_type` can train with: `norm`, except that several CPU
    processes need instance norm (their batch statistics cannot be synchronised)."""
    return CPU_NORM if count > 1 and device_type == "cpu" else norm


def check_processes(cfg: Config, device_type: str, gpus: int) -> None:
    """The rules that depend on the machine the processes run on (config.validate checks the static
    ones: batch_size a multiple of the processes, device auto, cuda or cpu with several)."""
    count, per_node = processes(cfg), cfg.train.nproc_per_node
    if norm_for(cfg.model.norm, count, device_type) != cfg.model.norm:
        raise Pix2PixError(f"params.yaml: 'model.norm' is {cfg.model.norm}, which several CPU processes cannot "
                           f"synchronise (SyncBatchNorm needs GPUs); use model.norm: {CPU_NORM}, or one process")
    if count > 1 and device_type == "cuda" and per_node > gpus:
        raise Pix2PixError(f"params.yaml: 'train.nproc_per_node' is {per_node} but {gpus} GPUs are visible here; "
                           "one process per GPU")


def synchronised(module: torch.nn.Module, world: World, norm: str) -> torch.nn.Module:
    """With several processes and batch norm, batch statistics over the global batch, as one process
    at that batch would take them (SyncBatchNorm)."""
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module) if world.size > 1 and norm == "batch" else module


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def torchrun_command(cfg: Config, *target: str, node_rank: int = 0) -> list[str]:
    """The torchrun line that runs `target` (a script, or -m module, and its arguments) as cfg asks:
    standalone on one machine; else machine `node_rank` of a static rendezvous at train.rdzv_endpoint.
    Machine 0 (the one running `dvc repro`, where the endpoint is) then holds rank 0, which writes
    the outputs DVC expects there."""
    t = cfg.train
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={t.nproc_per_node}", f"--nnodes={t.nnodes}"]
    if t.nnodes == 1:
        cmd.append("--standalone")  # a free local port, no endpoint to configure
    else:
        host, port = t.rdzv_endpoint.rsplit(":", 1)
        cmd += [f"--node-rank={node_rank}", f"--master-addr={host}", f"--master-port={port}"]
    return cmd + list(target)


def launch(cfg: Config, *target: str) -> None:
    """Run `target` under torchrun and wait; a failed process fails the whole run in one line.
    This machine's rules are checked first, so a breach costs one line, not the processes' start."""
    check_processes(cfg, pick_device(cfg.device).type, torch.cuda.device_count())
    cmd = torchrun_command(cfg, *target)
    log.info("launching %d processes: %s", processes(cfg), " ".join(cmd))
    code = subprocess.call(cmd)
    if code:
        raise Pix2PixError(f"torchrun: a training process failed (exit {code}; its error is above) and the others were "
                           "stopped. Checkpoints of finished epochs are kept: fix the cause and re-run to resume")


def join(cfg: Config) -> tuple[World, torch.device]:
    """Join the process group when started by torchrun (World() otherwise); returns this process's
    place and device (cuda:LOCAL_RANK on GPUs)."""
    if not under_torchrun():
        return World(), pick_device(cfg.device)
    world = World(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    if world.size != processes(cfg):  # a hand-started torchrun: config's checks assumed processes(cfg)
        raise Pix2PixError(f"torchrun started {world.size} processes but params.yaml asks for {processes(cfg)} "
                           "(train.nproc_per_node x train.nnodes); make them agree")
    device = pick_device(cfg.device)
    check_processes(cfg, device.type, torch.cuda.device_count())
    if device.type == "cuda":  # config allows only auto or cuda here: each process takes its local rank's GPU
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=cfg.train.dist_timeout_s)  # a stuck peer fails the run after this, never hangs it
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout,
                            device_id=device if device.type == "cuda" else None)
    return world, device


def leave(world: World) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def epoch_order(n: int, epoch: int, seed: int, world: World) -> torch.Tensor:
    """This process's sample indices for `epoch`: DistributedSampler's shuffle-by-(seed, epoch),
    padded so that every process takes the same number of steps, dealt rank::world."""
    sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world.size, rank=world.rank, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler))


def wrap(module: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DDP around `module` when several processes train (its batch norm `synchronised` first)."""
    if world.size == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def sum_(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """In-place sum over all processes (a device collective: no host sync)."""
    if world.size > 1:
        dist.all_reduce(tensor)
    return tensor


def max_(tensor: torch.Tensor, world: World) -> torch.Tensor:
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def from_main(obj, world: World):
    """The main process's `obj` on every process (a resumed checkpoint, for instance)."""
    if world.size == 1:
        return obj
    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, world: World) -> list:
    """Every process's `obj`, in rank order, on every process."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out
