"""`pix2pix bench`: its timer and FLOP count, each measurement end to end at CPU sizes, and the
classic reference it compares against."""

import itertools
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pix2pix.bench import pipeline, speed
from pix2pix.bench.concurrent import run_together
from pix2pix.cli import app
from pix2pix.distributed import memory_format
from pix2pix.errors import Pix2PixError


def tiny_bench(tmp_path, monkeypatch, *options: str):
    """`pix2pix bench` at 32 px, width 8, 2 timed steps on the CPU, run where no params.yaml is (the
    repo's defaults are used); (its CLI result, the JSON it wrote)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--size", "32", "--ngf", "8", "--steps", "2", "--warmup", "1",
                                      "--workers", "0", "--device", "cpu", *options, "--json", str(out)])
    assert result.exit_code == 0, result.output
    return result, json.loads(out.read_text())


class Clock:
    """A perf_counter that moves `tick` seconds each time the work runs, and not otherwise."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        return self.now

    def work(self, _batch) -> None:
        self.now += self.tick


def test_the_timer_leaves_the_warm_up_out_and_gives_seconds_per_step(monkeypatch):
    clock = Clock(0.25)
    monkeypatch.setattr(pipeline.time, "perf_counter", clock)
    assert pipeline.time_it(lambda: None, clock.work, torch.device("cpu"), steps=4, warmup=3) == (0.75, 0.25)


def test_a_row_reports_throughput_flops_and_speed_from_the_measured_step(monkeypatch, tiny_cfg):
    """With a batch known to take 0.1 s and a step 0.4 s (a fake clock), the row's rates follow from
    them and from the step's FLOPs, whatever the machine."""
    batch, step = Clock(0.1), Clock(0.4)
    step.now = batch.now = 0.0
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: batch.now + step.now)
    model = type("Step", (), {"step": lambda self, a, b: step.work(None)})()
    x = torch.zeros(2, 6, 64, 64)

    def next_batch():
        batch.work(None)
        return x[:, :3], x[:, 3:]

    row = speed.measure("test", tiny_cfg, model, next_batch, 2, "fp32", torch.device("cpu"), 3, 1)
    flops = speed.step_flops(tiny_cfg, torch.device("cpu"), x[:, :3], x[:, 3:])
    assert row["data_images_per_s"] == pytest.approx(20.0)  # the input pipeline alone: 2 images per 0.1 s
    assert row["images_per_s"] == pytest.approx(4.0) and row["ms_per_step"] == pytest.approx(500.0)
    assert row["warmup_s"] == pytest.approx(0.5)
    assert row["tflops"] == pytest.approx(flops / 0.5 / 1e12) and row["mfu"] is None  # no peak known for a CPU


def test_a_steps_flops_count_the_forward_and_backward_passes_and_scale_with_the_batch_and_pixels(tiny_cfg):
    from torch.utils.flop_counter import FlopCounterMode

    from pix2pix.models import build_discriminator, build_generator

    cpu = torch.device("cpu")
    x = torch.rand(2, 6, 64, 64) * 2 - 1
    one, two = (speed.step_flops(tiny_cfg, cpu, x[:n, :3], x[:n, 3:]) for n in (1, 2))
    assert two == pytest.approx(2 * one, rel=0.01)
    with FlopCounterMode(display=False) as forward, torch.no_grad():  # G once, D on three pairs
        build_generator(tiny_cfg)(x[:1, :3])
        build_discriminator(tiny_cfg)(torch.cat([x[:1]] * 3))
    # backward passes cost about twice their forward: about 3 forwards in all
    assert 2.5 * forward.get_total_flops() < one < 3.5 * forward.get_total_flops()


def test_bench_cli_prints_and_writes_the_table(tmp_path, monkeypatch):
    result, table = tiny_bench(tmp_path, monkeypatch, "--batch-sizes", "1,4")
    assert table["device"] == "cpu" and table["size"] == 32
    rows = table["rows"]
    assert [r["pipeline"].split()[0] for r in rows] == ["(a)", "(b)", "(b)"] and [r["batch"] for r in rows] == [1, 1, 4]
    assert rows[0]["speedup"] == 1.0 and rows[0]["precision"] == "fp32"
    for r in rows:  # docs/performance.md: speedup is images/s over row (a)'s
        assert r["speedup"] == pytest.approx(r["images_per_s"] / rows[0]["images_per_s"])
        assert r["ms_per_step"] == pytest.approx(1e3 * r["batch"] / r["images_per_s"])
    assert all(r["mfu"] is None and r["peak_mem_gb"] is None for r in rows)  # no CPU peak in the table
    lines = result.stdout.splitlines()
    assert lines[0].startswith("device: ") and lines[1].startswith("pipeline ")
    printed = list(itertools.takewhile(lambda line: line.startswith("("), lines[2:]))  # the table's rows
    assert len(printed) == len(rows)
    for line, r in zip(printed, rows):
        assert line.startswith(r["pipeline"]) and f"{r['images_per_s']:.1f}" in line


@pytest.mark.slow
def test_bench_measures_data_parallel_scaling_on_two_processes(tmp_path, monkeypatch):
    result, table = tiny_bench(tmp_path, monkeypatch, "--batch-sizes", "2", "--nproc-per-node", "2")
    rows = table["scaling"]
    assert [r["processes"] for r in rows] == [1, 2] and all(r["batch_per_process"] == 2 for r in rows)
    assert rows[0]["scaling"] == 1.0 and "instance norm" in rows[1]["pipeline"]  # CPU processes: instance norm
    for r in rows:  # docs/multi-gpu.md: scaling = images/s on N / (N x images/s on 1)
        assert r["scaling"] == pytest.approx(r["images_per_s"] / (r["processes"] * rows[0]["images_per_s"]))
    assert rows[1]["images_per_s"] == pytest.approx(2 * 2 / (rows[1]["ms_per_step"] / 1e3))  # both processes' images
    assert "data-parallel scaling" in result.stdout


@pytest.mark.slow
def test_bench_runs_n_trainings_at_once_and_adds_up_their_rates(tmp_path, monkeypatch):
    result, table = tiny_bench(tmp_path, monkeypatch, "--batch-sizes", "1", "--concurrent", "1,2")
    rows = table["concurrent"]
    assert [r["processes"] for r in rows] == [1, 2]
    for r in rows:  # one timing per process, summed
        assert len(r["per_process_images_per_s"]) == r["processes"]
        assert r["images_per_s"] == pytest.approx(sum(r["per_process_images_per_s"]))
        assert 0.1 < r["peak_mem_gb_per_process"] < 16  # a CPU training's resident set: torch and the model
    assert rows[0]["vs_one"] == 1.0
    for r in rows:  # docs/performance.md: vs one is the N trainings' summed images/s over one training's
        assert r["vs_one"] == pytest.approx(r["images_per_s"] / rows[0]["images_per_s"])
    assert "trainings at once" in result.stdout


def test_a_failed_concurrent_training_stops_the_others_with_one_line(tmp_path):
    pid_file = tmp_path / "pid"
    waiting = [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                                     "time.sleep(600)"]  # one waiting for the others, forever
    failing = [sys.executable, "-c", f"import os, time\nwhile not os.path.exists({str(pid_file)!r}): time.sleep(0.01)\n"
                                     "raise SystemExit(3)"]
    with pytest.raises(Pix2PixError, match=r"^bench: a concurrent training failed \(exit 3; its error is above\)$"):
        run_together([waiting, failing])
    with pytest.raises(ProcessLookupError):  # the waiting one was stopped (and reaped), not left behind
        os.kill(int(pid_file.read_text()), 0)


def test_bench_refuses_concurrent_counts_that_are_not_counts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["bench", "--concurrent", "1,two"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --concurrent is '1,two'; give counts of trainings, such as 1,2,4,8"


def test_a_shard_smaller_than_one_batch_is_refused_when_the_pipeline_is_set_up(tiny_cfg):
    # not when the first batch is drawn: the scaling and concurrent workers set up through it too
    with pytest.raises(Pix2PixError, match=r"^bench: 3 train pairs in this process's shard, fewer than one batch of 4; "
                                           r"use smaller --batch-sizes, or more tiles$"):
        pipeline.project_pipeline(tiny_cfg, torch.zeros(3, 6, 64, 64, dtype=torch.uint8), 4, torch.device("cpu"))


def test_cpu_training_keeps_weights_and_batches_in_the_default_layout(tiny_cfg):
    # channels_last weights make CPU fused Adam copy each one to a contiguous tensor and back per step
    model, next_batch = pipeline.project_pipeline(tiny_cfg, torch.zeros(4, 6, 64, 64, dtype=torch.uint8), 1,
                                                  torch.device("cpu"))
    weights = [p for net in (model.engine.G, model.engine.D) for p in net.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous() for p in weights)
    assert all(x.is_contiguous() for x in next_batch())
    assert memory_format(torch.device("cuda")) == torch.channels_last  # cuDNN's NHWC kernels


def test_peak_table_matches_device_names():
    cuda = torch.device("cuda")
    for name, bf16 in (("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.4)):
        with pytest.MonkeyPatch.context() as m:
            m.setattr(torch.cuda, "get_device_name", lambda device, n=name: n)
            assert speed.peak_tflops(cuda, "bf16") == bf16
    assert speed.peak_tflops(torch.device("cpu"), "fp32") is None


def test_classic_reference_crops_and_flips_both_halves_alike_in_the_asked_direction(tmp_path):
    half = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(np.concatenate([half, half], axis=1)).save(tmp_path / "same.png")
    for direction in ("AtoB", "BtoA"):
        pairs = speed.ClassicPairs([tmp_path / "same.png"], 32, 36, direction)
        for _ in range(5):
            a, b = pairs[0]
            assert a.shape == (3, 32, 32) and torch.equal(a, b) and -1 <= a.min() <= a.max() <= 1
    left, right = (np.full((40, 40, 3), v, dtype=np.uint8) for v in (0, 255))
    Image.fromarray(np.concatenate([left, right], axis=1)).save(tmp_path / "t.png")
    a, b = speed.ClassicPairs([tmp_path / "t.png"], 32, 36, "AtoB")[0]
    assert a.max() == -1 and b.min() == 1  # A is the left half
    a, b = speed.ClassicPairs([tmp_path / "t.png"], 32, 36, "BtoA")[0]
    assert a.min() == 1 and b.max() == -1
