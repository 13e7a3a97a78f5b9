"""Data-parallel training: the train stage under torchrun with 2 CPU processes (gloo).

Each run is the real stage script in a folder holding params.yaml and data/tiles, launched the way
`dvc repro` launches it. The runs switch off what is random per process (dropout, crop, flip):
one process drawing for a batch of 2 cannot make the same draws as two processes drawing for 1
each, and the point here is that the gradients, batch statistics and sample order are the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import ROOT, stage_args, tiny_overrides
from dvc_project import md5, write_params
from pix2pix.config import load_config
from pix2pix.data.download import fetch
from pix2pix.data.tiles import build_tiles
from pix2pix.distributed import World, epoch_order

pytestmark = pytest.mark.slow  # every test here drives whole pipelines or processes

FAULTS = ROOT / "tests" / "faults"
# After 3 steps the two trainings' weight changes agree well within 5%, while a run whose gradients
# differ (batch 1) is off by about as much as it changed. Float sums in another order differ in the
# last bits at first; Adam magnifies that in weights whose gradient is near 0, and a GAN's steps
# magnify it further, so equality is checked after a few steps, not after an epoch of many.
RELATIVE_TOLERANCE = 0.05


def overrides(nproc: int, **extra) -> dict:
    return tiny_overrides(**{
        "train.nproc_per_node": nproc, "model.norm": "instance", "model.dropout": False, "augment.flip": False,
        "augment.load_scale": 1.0, "eval.fid_extractor": "none", "train.threads": 1, "data.synthetic_count": 8,
        **extra})


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):  # 6 train pairs: 3 steps per epoch at global batch 2
    folder = tmp_path_factory.mktemp("ddp-tiles")
    cfg = load_config(ROOT / "params.yaml", overrides(1))
    build_tiles(fetch(cfg, folder / "raw"), folder / "tiles", cfg)  # no jitter: 64 px
    return folder / "tiles"


TRAIN_ARGS = stage_args("train")


def train_stage(folder, tiles, nproc: int, env_extra: dict | None = None, check=True, **extra):
    """Run the train stage's script in `folder` (params.yaml + data/tiles) as `dvc repro` would; the
    repo root on PYTHONPATH lets torchrun's `-m stages.train` find it from `folder`."""
    folder.mkdir(exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    if not (folder / "data/tiles").exists():
        (folder / "data/tiles").symlink_to(tiles)
    write_params(folder, overrides(nproc, **extra))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db", **(env_extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), (env_extra or {}).get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, str(ROOT / "stages/train.py"), *TRAIN_ARGS], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=600)  # a hang fails here, not forever
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(folder) -> dict:
    return torch.load(folder / "models/generator.pt", weights_only=True)["generator"]


def cancelled_biases(model: nn.Module) -> set[str]:
    """Biases of the convolutions an affine-free instance norm follows: the norm subtracts them
    again, so their true gradient is 0, Adam turns float noise (~1e-8) into full-size steps, and
    they have no effect on the output."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            kids = list(module.named_children())
            names |= {f"{prefix}.{name}.bias" for (name, a), (_, b) in zip(kids, kids[1:])
                      if isinstance(b, nn.InstanceNorm2d) and getattr(a, "bias", None) is not None}
    return names


def relative_difference(a: dict, b: dict, start: nn.Module) -> float:
    """|change of a - change of b| / |change of a| over the generator's effective weights."""
    init = start.state_dict()
    keys = [k for k in init if k not in cancelled_biases(start)]
    da, db = (torch.cat([(w[k] - init[k]).flatten() for k in keys]) for w in (a, b))
    return float((da - db).norm() / da.norm())


def outputs(folder) -> list[str]:
    skip = ("data", "mlflow.db", "mlruns", "params.yaml")  # MLflow's files are named by run id: compared below
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.parts[len(folder.parts)] not in skip)


def mlflow_runs(folder):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    return client, client.search_runs([client.get_experiment_by_name("pix2pix").experiment_id])


@pytest.fixture(scope="module")
def one(tiles, tmp_path_factory):
    folder = tmp_path_factory.mktemp("one-process")
    train_stage(folder, tiles, 1, epochs=1, **{"optim.decay_share": 0.0})
    return folder


@pytest.fixture(scope="module")
def two(tiles, tmp_path_factory):
    folder = tmp_path_factory.mktemp("two-processes")
    train_stage(folder, tiles, 2, epochs=1, **{"optim.decay_share": 0.0})
    return folder


def test_each_epoch_deals_disjoint_shards_that_cover_the_data_and_change_with_the_epoch():
    shards = [epoch_order(17, 0, 0, World(rank, rank, 2)) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 9  # padded: every process takes as many steps
    assert set(shards[0].tolist()) | set(shards[1].tolist()) == set(range(17))
    assert len(set(shards[0].tolist()) & set(shards[1].tolist())) <= 1  # only the padding repeats
    single = epoch_order(17, 0, 0, World())
    # one process's batch of 2 at step s is what the two processes take at step s
    assert torch.equal(torch.stack(shards, 1).flatten()[:17], single)
    assert not torch.equal(epoch_order(17, 1, 0, World(0, 0, 2)), shards[0])


def test_two_processes_at_global_batch_2_train_the_weights_one_process_trains_at_batch_2(one, two, tiles, tmp_path):
    from pix2pix.models import build_generator

    torch.manual_seed(0)
    start = build_generator(load_config(one / "params.yaml"))  # the initial weights of both runs
    assert relative_difference(weights(one), weights(two), start) < RELATIVE_TOLERANCE
    train_stage(tmp_path, tiles, 1, epochs=1, batch_size=1, **{"optim.decay_share": 0.0})  # other gradients
    assert relative_difference(weights(one), weights(tmp_path), start) > 10 * RELATIVE_TOLERANCE
    losses = ["G_GAN", "G_L1", "D_real", "D_fake"]  # means over both processes' samples
    pd.testing.assert_frame_equal(pd.read_csv(one / "metrics/train_epochs.csv")[losses],
                                  pd.read_csv(two / "metrics/train_epochs.csv")[losses], atol=1e-5)


def test_only_the_main_process_writes_so_the_outputs_are_those_of_one_process(one, two):
    assert outputs(two) == outputs(one)
    assert "checkpoints/last.pt" in outputs(two) and "metrics/grids/epoch_001.png" in outputs(two)
    client, runs = mlflow_runs(two)
    assert len(runs) == 1  # one MLflow run, not one per process
    one_client, one_runs = mlflow_runs(one)
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id)] == \
        [a.path for a in one_client.list_artifacts(one_runs[0].info.run_id)]
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_L1")] == [1]
    assert len(torch.load(two / "checkpoints/last.pt", weights_only=True)["rng"]) == 2  # each process's RNG


def test_a_nan_step_in_one_process_is_skipped_by_both(tiles, tmp_path):
    """Rank 1's batch at step 2 is NaN: its gradients, averaged into rank 0's, would spoil both
    models; both skip the step instead, the run goes on, and the step is counted once."""
    train_stage(tmp_path, tiles, 2, {"PYTHONPATH": str(FAULTS), "PIX2PIX_NAN_AT_STEP": "2", "PIX2PIX_FAULT_RANK": "1"},
                epochs=1, **{"optim.decay_share": 0.0})
    assert pd.read_csv(tmp_path / "metrics/train_epochs.csv")["skipped_steps"].tolist() == [1]
    assert all(torch.isfinite(w).all() for w in weights(tmp_path).values())


@pytest.fixture(scope="module")
def crashed(tiles, tmp_path_factory):
    """A 2-process run whose rank 1 was SIGKILLed at step 5 (3 steps per epoch: in epoch 2), and the
    launcher's result; tests resume copies of its folder."""
    folder = tmp_path_factory.mktemp("crashed") / "run"
    crash = train_stage(folder, tiles, 2, {"PYTHONPATH": str(FAULTS), "PIX2PIX_KILL_AT_STEP": "5",
                                           "PIX2PIX_FAULT_RANK": "1"}, check=False)
    return folder, crash


def test_a_killed_process_stops_the_whole_run_with_a_clear_error(crashed):
    _, crash = crashed
    assert crash.returncode == 1
    last = crash.stderr.strip().splitlines()[-1]
    assert last.startswith("error: torchrun: a training process failed") and "re-run to resume" in last


def resumable_copy(crashed, dest):
    shutil.copytree(crashed[0], dest, symlinks=True)  # data/tiles stays a link to the shared tiles
    assert torch.load(dest / "checkpoints/last.pt", weights_only=True)["training"]["epoch"] == 1
    return dest


def test_a_killed_multi_process_run_resumes_to_the_same_weights(tiles, crashed, tmp_path):
    killed = resumable_copy(crashed, tmp_path / "killed")
    train_stage(killed, tiles, 2)
    train_stage(tmp_path / "whole", tiles, 2)
    a, b = weights(tmp_path / "whole"), weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    _, runs = mlflow_runs(killed)
    assert len(runs) == 1 and runs[0].data.tags["model_md5"] == md5(killed / "models/generator.pt")


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_a_checkpoint_of_n_processes_resumes_on_m(tiles, crashed, tmp_path, before, after):
    if before == 2:
        folder = resumable_copy(crashed, tmp_path / "run")
    else:
        folder = tmp_path / "run"
        crash = train_stage(folder, tiles, 1, {"PYTHONPATH": str(FAULTS), "PIX2PIX_KILL_AT_STEP": "5"}, check=False)
        assert crash.returncode != 0
    first = pd.read_csv(folder / "metrics/train_epochs.csv")
    train_stage(folder, tiles, after)
    rows = pd.read_csv(folder / "metrics/train_epochs.csv")
    assert rows["epoch"].tolist() == [1, 2]
    pd.testing.assert_frame_equal(rows.iloc[:1], first)  # epoch 1 kept from the first run, not redone
    assert rows["lr"].tolist() == pytest.approx([2e-4, 1e-4])  # the schedule went on
    _, runs = mlflow_runs(folder)
    assert len(runs) == 1
    assert len(torch.load(folder / "checkpoints/last.pt", weights_only=True)["rng"]) == after


def test_a_stuck_process_fails_the_run_after_the_timeout_instead_of_hanging(tiles, tmp_path):
    crash = train_stage(tmp_path, tiles, 2, {"PYTHONPATH": str(FAULTS), "PIX2PIX_HANG_AT_STEP": "3",
                                             "PIX2PIX_FAULT_RANK": "1"}, check=False, **{"train.dist_timeout_s": 10})
    assert crash.returncode == 1
    assert "error: process 0 waited more than train.dist_timeout_s=10 s for the others: one is stuck" in crash.stderr
    assert crash.stderr.strip().splitlines()[-1].startswith("error: torchrun: a training process failed")


def test_each_machine_gets_its_torchrun_line_and_machine_0_holds_rank_0(tmp_path):
    from typer.testing import CliRunner

    from pix2pix.cli import app

    write_params(tmp_path, overrides(4, batch_size=8, **{"train.nnodes": 2, "train.rdzv_endpoint": "10.0.0.1:29500"}))
    shutil.copy(ROOT / "dvc.yaml", tmp_path)
    lines = [CliRunner().invoke(app, ["torchrun", "--node-rank", str(k), "--params", str(tmp_path / "params.yaml")])
             for k in (0, 1, 2)]
    assert lines[0].exit_code == 0 and lines[0].output.split()[1:] == [
        "-m", "torch.distributed.run", "--nproc-per-node=4", "--nnodes=2", "--node-rank=0",
        "--master-addr=10.0.0.1", "--master-port=29500", "-m", "stages.train", *TRAIN_ARGS]
    assert "--node-rank=1" in lines[1].output
    assert lines[2].exit_code == 1 and "--node-rank 2: must be in [0, train.nnodes=2)" in lines[2].output


def test_several_cpu_processes_refuse_batch_norm_in_one_line(tiles, tmp_path):
    result = train_stage(tmp_path, tiles, 2, check=False, **{"model.norm": "batch"})
    assert result.returncode == 1
    assert "'model.norm' is batch, which several CPU processes cannot synchronise" in result.stderr
