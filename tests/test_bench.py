"""`pix2pix bench` runs on CPU (small sizes) and reports every column it promises."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pix2pix import bench
from pix2pix.cli import app
from pix2pix.distributed import memory_format


def tiny_bench(tmp_path, monkeypatch, *options: str):
    """`pix2pix bench` at 32 px, width 8, 2 timed steps on the CPU, run where no params.yaml is (the
    repo's defaults are used); (its CLI result, the JSON it wrote)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--size", "32", "--ngf", "8", "--steps", "2", "--warmup", "1",
                                      "--workers", "0", "--device", "cpu", *options, "--json", str(out)])
    assert result.exit_code == 0, result.output
    return result, json.loads(out.read_text())


def test_bench_cli_prints_and_writes_the_table(tmp_path, monkeypatch):
    result, table = tiny_bench(tmp_path, monkeypatch, "--batch-sizes", "1,4")
    assert table["device"] == "cpu" and table["size"] == 32
    rows = table["rows"]
    assert [r["pipeline"].split()[0] for r in rows] == ["(a)", "(b)", "(b)"] and [r["batch"] for r in rows] == [1, 1, 4]
    assert rows[0]["speedup"] == 1.0 and rows[0]["precision"] == "fp32"
    for r in rows:
        assert r["images_per_s"] > 0 and r["data_images_per_s"] > 0 and r["tflops"] > 0
        assert r["ms_per_step"] == pytest.approx(1e3 * r["batch"] / r["images_per_s"])
        assert r["speedup"] == pytest.approx(r["images_per_s"] / rows[0]["images_per_s"])
        assert r["mfu"] is None and r["peak_mem_gb"] is None  # no CPU peak in the table
    assert "(a) classic" in result.output and "speedup" in result.output


@pytest.mark.slow
def test_bench_measures_data_parallel_scaling_on_two_processes(tmp_path, monkeypatch):
    result, table = tiny_bench(tmp_path, monkeypatch, "--batch-sizes", "2", "--nproc-per-node", "2")
    rows = table["scaling"]
    assert [r["processes"] for r in rows] == [1, 2] and all(r["batch_per_process"] == 2 for r in rows)
    assert rows[0]["scaling"] == 1.0
    assert rows[1]["scaling"] == pytest.approx(rows[1]["images_per_s"] / (2 * rows[0]["images_per_s"]))
    assert rows[1]["images_per_s"] == pytest.approx(2 * 2 / (rows[1]["ms_per_step"] / 1e3))  # both processes' images
    assert "data-parallel scaling" in result.output


@pytest.mark.slow
def test_bench_runs_n_trainings_at_once_and_adds_up_their_rates(tmp_path, monkeypatch):
    result, table = tiny_bench(tmp_path, monkeypatch, "--batch-sizes", "1", "--concurrent", "1,2")
    rows = table["concurrent"]
    assert [r["processes"] for r in rows] == [1, 2]
    for r in rows:  # one timing per process, summed
        assert len(r["per_process_images_per_s"]) == r["processes"] and all(v > 0 for v in r["per_process_images_per_s"])
        assert r["images_per_s"] == pytest.approx(sum(r["per_process_images_per_s"]))
        assert 0.1 < r["peak_mem_gb_per_process"] < 16  # a CPU training's resident set: torch and the model
    assert rows[0]["vs_one"] == 1.0 and rows[1]["vs_one"] == pytest.approx(rows[1]["images_per_s"] / rows[0]["images_per_s"])
    assert "trainings at once" in result.output


def test_a_failed_concurrent_training_stops_the_others_with_one_line():
    import subprocess
    import sys

    from pix2pix.errors import Pix2PixError

    waiting = [sys.executable, "-c", "import time; time.sleep(600)"]  # one waiting for the others, forever
    with pytest.raises(Pix2PixError, match=r"^bench: a concurrent training failed \(exit 3; its error is above\)$"):
        bench.run_together([waiting, [sys.executable, "-c", "raise SystemExit(3)"]])
    alive = subprocess.run(["pgrep", "-f", "time.sleep\\(600\\)"], capture_output=True, text=True).stdout.split()
    assert not alive  # the waiting one was stopped, not left behind


def test_bench_refuses_concurrent_counts_that_are_not_counts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["bench", "--concurrent", "1,two"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --concurrent is '1,two'; give counts of trainings, such as 1,2,4,8"


def test_flops_of_a_step_are_counted_for_forward_and_backward(tiny_cfg):
    model = bench.Pix2Pix(tiny_cfg, torch.device("cpu"))
    x = torch.rand(2, 6, 64, 64) * 2 - 1
    one, two = (bench.step_flops(model, x[:n, :3], x[:n, 3:]) for n in (1, 2))
    assert one > 0 and two == pytest.approx(2 * one, rel=0.01)  # FLOPs scale with the batch


def test_cpu_training_keeps_weights_and_batches_in_the_default_layout(tiny_cfg):
    # channels_last weights make CPU fused Adam copy each one to a contiguous tensor and back per step
    model, next_batch = bench.project_pipeline(tiny_cfg, torch.zeros(4, 6, 64, 64, dtype=torch.uint8), 1,
                                               torch.device("cpu"))
    weights = [p for net in (model.G, model.D) for p in net.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous() for p in weights)
    assert all(x.is_contiguous() for x in next_batch())
    assert memory_format(torch.device("cuda")) == torch.channels_last  # cuDNN's NHWC kernels


def test_peak_table_matches_device_names():
    cuda = torch.device("cuda")
    for name, bf16 in (("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.4)):
        with pytest.MonkeyPatch.context() as m:
            m.setattr(torch.cuda, "get_device_name", lambda device, n=name: n)
            assert bench.peak_tflops(cuda, "bf16") == bf16
    assert bench.peak_tflops(torch.device("cpu"), "fp32") is None


def test_classic_reference_crops_and_flips_both_halves_alike(tmp_path):
    half = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(np.concatenate([half, half], axis=1)).save(tmp_path / "t.png")
    for direction in ("AtoB", "BtoA"):
        pairs = bench.ClassicPairs([tmp_path / "t.png"], 32, 36, direction)
        for _ in range(5):
            a, b = pairs[0]
            assert a.shape == (3, 32, 32) and torch.equal(a, b) and -1 <= a.min() <= a.max() <= 1


def test_classic_reference_returns_the_halves_in_the_asked_direction(tmp_path):
    left, right = (np.full((40, 40, 3), v, dtype=np.uint8) for v in (0, 255))
    Image.fromarray(np.concatenate([left, right], axis=1)).save(tmp_path / "t.png")
    a, b = bench.ClassicPairs([tmp_path / "t.png"], 32, 36, "AtoB")[0]
    assert a.max() == -1 and b.min() == 1  # A is the left half
    a, b = bench.ClassicPairs([tmp_path / "t.png"], 32, 36, "BtoA")[0]
    assert a.min() == 1 and b.max() == -1
