"""Data-parallel scaling: this project's pipeline at one batch per process under torchrun, on 1
process and on N; scaling = images/s on N / (N x images/s on 1).

Each row is a torchrun launch of this module (`python -m pix2pix.bench.scaling SPEC.json`); the
gradient all-reduce in every step keeps the processes in step, so rank 0's time is the run's.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from pix2pix.bench.pipeline import project_pipeline, table, time_it
from pix2pix.config import load_config
from pix2pix.data.device_data import load_split
from pix2pix.distributed import configure, epoch_order, join, launch, leave
from pix2pix.errors import exit_on_error
from pix2pix.files import write_json


def scaling_rows(params: Path, overrides: dict, tiles: Path, batch: int, nproc: int, steps: int,
                 warmup: int) -> list[dict]:
    """Rows on 1 process and on `nproc`, both eager (no CUDA graph), so that only the processes
    differ. CPU processes use instance norm (SyncBatchNorm needs GPUs: the caller sets it)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="pix2pix-scaling-") as tmp:
        for n in dict.fromkeys([1, nproc]):
            spec = {"params": str(params), "tiles": str(tiles), "batch": batch, "steps": steps, "warmup": warmup,
                    "out": f"{tmp}/row{n}.json",
                    "overrides": {**overrides, "batch_size": batch * n, "train.nproc_per_node": n, "train.nnodes": 1}}
            Path(f"{tmp}/spec{n}.json").write_text(json.dumps(spec))
            launch(load_config(params, spec["overrides"]), "-m", "pix2pix.bench.scaling", f"{tmp}/spec{n}.json")
            rows.append(json.loads(Path(spec["out"]).read_text()))
    for row in rows:
        row["scaling"] = row["images_per_s"] / (row["processes"] * rows[0]["images_per_s"])
    return rows


@exit_on_error
def worker(spec_path: str) -> None:
    """One process of a scaling row: times the steps on its shard of the tiles."""
    spec = json.loads(Path(spec_path).read_text())
    cfg = load_config(spec["params"], spec["overrides"])
    world, device = join(cfg)
    try:
        configure(device)
        data = load_split(spec["tiles"], "train", cfg.task_direction)
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
    return table("data-parallel scaling", [
        ("procs", 5, lambda r: str(r["processes"])), ("batch/proc", 10, lambda r: str(r["batch_per_process"])),
        ("img/s", 9, lambda r: f"{r['images_per_s']:.1f}"), ("ms/step", 8, lambda r: f"{r['ms_per_step']:.2f}"),
        ("scaling", 8, lambda r: f"{100 * r['scaling']:.0f}%"),
    ], rows)


if __name__ == "__main__":
    worker(*sys.argv[1:])
