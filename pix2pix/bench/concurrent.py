"""Sweeps on one device: N independent batch-1 trainings at once, each in its own process (as
`dvc queue start -j N` runs experiments), for each N asked. The processes warm up, wait for each
other, then time their steps together; a row sums their images/s and takes the largest peak memory
of one (CUDA's allocator peak; the resident set on a CPU).

Each training is this module run as a process: `python -m pix2pix.bench.concurrent SPEC.json INDEX`.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pix2pix.bench.pipeline import project_pipeline, table, time_it
from pix2pix.config import load_config
from pix2pix.data.device_data import load_split
from pix2pix.distributed import configure, pick_device
from pix2pix.errors import Pix2PixError, exit_on_error
from pix2pix.files import write_json

START_WITHIN_S = 600  # a training that is not warm by then has failed to start


def concurrent_rows(params: Path, overrides: dict, tiles: Path, counts: list[int], steps: int,
                    warmup: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="pix2pix-concurrent-") as tmp:
        for n in counts:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            spec = folder / "spec.json"
            write_json(spec, {"params": str(params), "overrides": overrides, "tiles": str(tiles), "steps": steps,
                              "warmup": warmup, "processes": n})
            run_together([[sys.executable, "-m", "pix2pix.bench.concurrent", str(spec), str(i)] for i in range(n)])
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
def worker(spec_path: str, index: str) -> None:
    """One of a row's trainings: warm up, wait until all are warm, time the steps."""
    spec, folder = json.loads(Path(spec_path).read_text()), Path(spec_path).parent
    cfg = load_config(spec["params"], spec["overrides"])
    device = pick_device(cfg.device)
    configure(device)
    data = load_split(spec["tiles"], "train", cfg.task_direction, device, cfg.tile_size("train"))
    model, next_batch = project_pipeline(cfg, data, 1, device)
    warmup_s, _ = time_it(next_batch, lambda ab: model.step(*ab), device, 1, spec["warmup"])  # and one step
    (folder / f"{index}.ready").touch()
    deadline = time.monotonic() + START_WITHIN_S
    while len(list(folder.glob("*.ready"))) < spec["processes"]:  # the others still warming up
        if time.monotonic() > deadline:
            raise Pix2PixError(f"bench: the other concurrent trainings did not start within {START_WITHIN_S} s")
        time.sleep(0.01)
    _, step_s = time_it(next_batch, lambda ab: model.step(*ab), device, spec["steps"], 0)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux: KiB
    write_json(folder / f"{index}.json", {"images_per_s": 1 / step_s, "peak_mem_gb": peak / 2**30,
                                         "warmup_s": warmup_s})


def format_concurrent(rows: list[dict]) -> str:
    return table("trainings at once (one device)", [
        ("procs", 5, lambda r: str(r["processes"])), ("img/s", 9, lambda r: f"{r['images_per_s']:.1f}"),
        ("vs one", 7, lambda r: f"{r['vs_one']:.2f}x"), ("GB/proc", 8, lambda r: f"{r['peak_mem_gb_per_process']:.2f}"),
    ], rows)


if __name__ == "__main__":
    worker(*sys.argv[1:])
