"""What survives what: kills, changed params, corrupt checkpoints, NaN losses, hostile files,
failing MLflow stores and full disks, and two `dvc repro` at once."""

import errno
import json
import logging
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from archives import RunsCode
from conftest import ROOT, run_files, tiny_overrides
from dvc_project import init_repo, locked_md5, run
from pix2pix import checkpoints, generator_file
from pix2pix.config import load_config
from pix2pix.data.download import fetch
from pix2pix.data.tiles import build_tiles
from pix2pix.errors import Pix2PixError
from pix2pix.trainer import Pix2Pix, train

FAULTS = ROOT / "tests" / "faults"


def cfg_with(**overrides):
    return load_config(ROOT / "params.yaml", tiny_overrides(**{"mlflow.enabled": False, **overrides}))


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiles")
    build_tiles(fetch(cfg_with(), folder / "raw"), folder / "tiles", cfg_with())
    return folder / "tiles"


def train_in(folder, tiles, cfg):
    return train(cfg, tiles, folder / "checkpoints", folder / "generator.pt", folder / "best.pt", run_files(folder))


def stop_at_epoch(monkeypatch, epoch):
    """Make the validation of `epoch` raise, as a crash would (the epochs before it are checkpointed)."""
    from pix2pix import reporting

    calls, real = [0], reporting.score

    def score(*args, **kwargs):
        calls[0] += 1
        if calls[0] == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(reporting, "score", score)


# -- resume ---------------------------------------------------------------------------------------

def generator_tensors(path):
    return torch.load(path, weights_only=True)["generator"]


def same_weights(a, b) -> bool:
    a, b = generator_tensors(a), generator_tensors(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def checkpoint_epoch(folder) -> int:
    return checkpoints.read(folder / "checkpoints/last.pt", torch.device("cpu")).epoch


@pytest.mark.slow
def test_dvc_repro_after_sigkill_resumes_to_bit_identical_weights_in_the_same_mlflow_run(tmp_path):
    killed = tmp_path / "killed"
    env = init_repo(killed, tiny_overrides(epochs=3, **{"optim.decay_share": 0.67}),
                    PYTHONPATH=f"{killed}{os.pathsep}{FAULTS}")
    # 9 steps per epoch here: step 13 is the middle of epoch 2
    crash = subprocess.run(["dvc", "repro"], cwd=killed, env={**env, "PIX2PIX_KILL_AT_STEP": "13"},
                           capture_output=True, text=True, timeout=900)
    assert crash.returncode != 0
    assert checkpoint_epoch(killed) == 1
    run(["dvc", "repro"], killed, env)

    # the same training never interrupted: the killed repo's params on its tiles, in this process
    # (the stage's code, without a third pipeline; the CPU threads, on which float sums depend, match)
    assert json.loads((killed / "metrics/train.json").read_text())["cpu_threads"] == torch.get_num_threads()
    train_in(tmp_path / "whole", killed / "data/tiles", load_config(killed / "params.yaml", {"mlflow.enabled": False}))
    assert same_weights(tmp_path / "whole/generator.pt", killed / "models/generator.pt")
    pd.testing.assert_frame_equal(pd.read_csv(killed / "metrics/train_epochs.csv"),
                                  pd.read_csv(tmp_path / "whole/metrics/train_epochs.csv"))
    lrs = pd.read_csv(killed / "metrics/train_epochs.csv")["lr"].tolist()
    assert lrs == pytest.approx([2e-4, 2e-4 * 2 / 3, 2e-4 / 3])  # the schedule went on, not restarted
    assert sorted(p.name for p in (killed / "metrics/grids").iterdir()) == [f"epoch_00{i}.png" for i in (1, 2, 3)]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("pix2pix").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["model_md5"] == locked_md5(killed, "models/generator.pt")  # dvc.lock's model leads to its run
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_L1")] == [1, 2, 3]  # one of each epoch


def test_an_unfinished_checkpoint_is_not_resumed_under_changed_params(tmp_path, tiles, monkeypatch):
    stop_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_in(tmp_path, tiles, cfg_with(epochs=3))
    monkeypatch.undo()
    with pytest.raises(Pix2PixError, match=r"stopped at epoch 1/3\) was trained with lambda_l1=1000.0, params.yaml "
                                           r"now has 50.0; set train.resume: never"):
        train_in(tmp_path, tiles, cfg_with(epochs=3, lambda_l1=50.0))
    assert checkpoint_epoch(tmp_path) == 1  # untouched
    # the documented way out: start afresh
    assert train_in(tmp_path, tiles, cfg_with(epochs=3, lambda_l1=50.0, **{"train.resume": "never"}))["epoch"] == 3
    assert len(pd.read_csv(tmp_path / "metrics/train_epochs.csv")) == 3


def test_a_truncated_checkpoint_falls_back_to_the_previous_one_and_the_run_resumes_from_it(tmp_path, tiles,
                                                                                             monkeypatch, caplog):
    run = tmp_path / "run"
    stop_at_epoch(monkeypatch, 3)  # last.pt holds epoch 2, previous.pt epoch 1
    with pytest.raises(KeyboardInterrupt):
        train_in(run, tiles, cfg_with(epochs=4))
    monkeypatch.undo()
    last = run / "checkpoints/last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with caplog.at_level(logging.INFO):
        assert train_in(run, tiles, cfg_with(epochs=4))["epoch"] == 4
    assert "last.pt: unreadable checkpoint" in caplog.text
    assert "resuming " in caplog.text and "(stopped at epoch 1/4)" in caplog.text  # from previous.pt
    train_in(tmp_path / "whole", tiles, cfg_with(epochs=4))  # the same run, never interrupted
    assert same_weights(run / "generator.pt", tmp_path / "whole/generator.pt")
    pd.testing.assert_frame_equal(pd.read_csv(run / "metrics/train_epochs.csv"),
                                  pd.read_csv(tmp_path / "whole/metrics/train_epochs.csv"))


def test_with_a_checkpoint_every_two_epochs_a_resume_repeats_the_epoch_after_it(tmp_path, tiles, monkeypatch, caplog):
    cfg = cfg_with(epochs=4, **{"train.checkpoint_every": 2})
    stop_at_epoch(monkeypatch, 4)  # epoch 3 trained and reported, but its checkpoint not yet due
    with pytest.raises(KeyboardInterrupt):
        train_in(tmp_path / "run", tiles, cfg)
    monkeypatch.undo()
    assert checkpoint_epoch(tmp_path / "run") == 2
    with caplog.at_level(logging.INFO):
        train_in(tmp_path / "run", tiles, cfg)
    assert "(stopped at epoch 2/4)" in caplog.text
    train_in(tmp_path / "whole", tiles, cfg)
    assert same_weights(tmp_path / "run/generator.pt", tmp_path / "whole/generator.pt")
    assert pd.read_csv(tmp_path / "run/metrics/train_epochs.csv")["epoch"].tolist() == [1, 2, 3, 4]


def test_a_finished_run_is_not_resumed_a_longer_one_starts_afresh_and_stale_grids_go(tmp_path, tiles, caplog):
    """`-S epochs=3` after a finished 2-epoch run trains 3 epochs from the start (the LR schedule
    of 3 epochs differs from epoch 1 on); a shorter run afterwards leaves no grid of a later epoch."""
    train_in(tmp_path / "run", tiles, cfg_with(epochs=2))
    with caplog.at_level(logging.INFO):
        train_in(tmp_path / "run", tiles, cfg_with(epochs=3))
    assert "holds a finished run; starting a new one" in caplog.text
    train_in(tmp_path / "fresh", tiles, cfg_with(epochs=3))
    assert same_weights(tmp_path / "run/generator.pt", tmp_path / "fresh/generator.pt")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "run/metrics/train_epochs.csv"),
                                  pd.read_csv(tmp_path / "fresh/metrics/train_epochs.csv"))
    train_in(tmp_path / "run", tiles, cfg_with(epochs=1))
    assert sorted(p.name for p in (tmp_path / "run/metrics/grids").iterdir()) == ["epoch_001.png"]


def test_a_checkpoint_made_on_other_tiles_is_not_resumed(tmp_path, tiles, monkeypatch):
    stop_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_in(tmp_path, tiles, cfg_with(epochs=3))
    monkeypatch.undo()
    other = tmp_path / "other"
    build_tiles(fetch(cfg_with(seed=1), other / "raw"), other / "tiles", cfg_with())  # other cars
    with pytest.raises(Pix2PixError, match=r"stopped at epoch 1/3\) was trained on other tiles than .* holds now; "
                                           r"set train.resume: never"):
        train_in(tmp_path, other / "tiles", cfg_with(epochs=3))
    assert checkpoint_epoch(tmp_path) == 1


@pytest.mark.slow
def test_a_stage_killed_mid_write_puts_nothing_in_the_dvc_cache_and_the_next_repro_completes(tmp_path):
    env = init_repo(tmp_path, tiny_overrides(), PYTHONPATH=f"{tmp_path}{os.pathsep}{FAULTS}")
    run(["dvc", "repro", "download"], tmp_path, env)

    def cached():
        return {p.relative_to(tmp_path / ".dvc/cache") for p in (tmp_path / ".dvc/cache").rglob("*") if p.is_file()}

    before = cached()
    crash = subprocess.run(["dvc", "repro", "prepare"], cwd=tmp_path, env={**env, "PIX2PIX_KILL_AT_IMAGE": "5"},
                           capture_output=True, text=True, timeout=600)
    assert crash.returncode != 0
    assert list((tmp_path / "data").glob(".tiles.*.tmp"))  # the killed stage was writing tiles, half of the 5th
    assert not (tmp_path / "data/tiles").exists() and cached() == before  # none of it reached the output or cache
    assert "prepare" not in yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    run(["dvc", "repro"], tmp_path, env)
    assert not list((tmp_path / "data").glob(".tiles.*.tmp"))  # the next run cleared the killed one's folder
    assert "up to date" in run(["dvc", "status"], tmp_path, env).lower()


def test_training_draws_the_same_random_numbers_whether_the_fid_cache_is_cold_or_warm(tmp_path, tiles, monkeypatch):
    """clean-fid's data loader drew a seed from torch's global generator whenever features were
    computed; FID on tensors draws nothing, so the jitter and dropout of training (and so the
    weights) depend neither on the FID cache nor on FID being on."""
    cfg = cfg_with(**{"eval.fid_extractor": "offline"})
    monkeypatch.setenv("PIX2PIX_CACHE", str(tmp_path / "cache"))
    for cache in ("cold", "warm"):  # the first computes the val features, the second reads them
        train_in(tmp_path / cache, tiles, cfg)
    assert len(list((tmp_path / "cache/fid").iterdir())) == 1
    assert same_weights(tmp_path / "cold/generator.pt", tmp_path / "warm/generator.pt")
    train_in(tmp_path / "no-fid", tiles, cfg_with())  # FID off altogether: the same weights again
    assert same_weights(tmp_path / "cold/generator.pt", tmp_path / "no-fid/generator.pt")


# -- numerical faults -------------------------------------------------------------------------------

def model_state(model):
    """Everything of G and D a step can change: weights and batch-norm running statistics."""
    return {f"{name}.{k}": v.clone() for name, net in (("G", model.engine.G), ("D", model.engine.D))
            for k, v in net.state_dict().items()}


def test_a_step_with_a_nan_loss_leaves_g_and_d_as_they_were_and_too_many_in_a_row_stop_the_run():
    cfg = cfg_with(**{"train.max_nonfinite_steps": 2})
    model = Pix2Pix(cfg, torch.device("cpu"))
    x = torch.rand(2, 6, 64, 64) * 2 - 1
    model.step(x[:, :3], x[:, 3:])
    before = model_state(model)
    assert any(k.endswith("running_mean") for k in before)  # the buffers are part of what is compared
    nan = torch.full_like(x, float("nan"))
    assert not torch.isfinite(model.step(nan[:, :3], nan[:, 3:])).all()
    after = model_state(model)
    assert before.keys() == after.keys()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []  # weights and buffers as before
    engine = model.engine
    engine.G.eval()
    assert torch.isfinite(engine.G(x[:1, :3])).all()  # eval mode reads the running statistics
    engine.G.train()
    assert engine.guard.check(engine.steps) == 1
    model.step(x[:, :3], x[:, 3:])  # a good step resets the run of bad ones, and does change the state
    assert any(not torch.equal(after[k], v) for k, v in model_state(model).items())
    model.step(nan[:, :3], nan[:, 3:])
    model.step(nan[:, :3], nan[:, 3:])
    assert engine.guard.check(engine.steps) == 3
    model.step(nan[:, :3], nan[:, 3:])
    with pytest.raises(Pix2PixError, match="3 steps in a row had a NaN or infinite loss"):
        engine.guard.check(engine.steps)


def test_a_bad_discriminator_loss_skips_the_generator_update_too():
    model = Pix2Pix(cfg_with(), torch.device("cpu"))
    x = torch.rand(2, 6, 64, 64) * 2 - 1
    before = model_state(model)
    real_d = model.engine.d_fwd
    model.engine.d_fwd = lambda pair: real_d(pair) * float("inf")  # D's loss alone is not finite
    model.step(x[:, :3], x[:, 3:])
    after = model_state(model)
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    assert model.engine.guard.check(model.engine.steps) == 1


def poison_steps(monkeypatch, first, last=None):
    """Every input of the jittered batches number first..last (1-based; last None: to the end) is NaN."""
    from pix2pix.data.augment import PairJitter

    real, calls = PairJitter.forward, [0]

    def poisoned(self, batch):
        calls[0] += 1
        out = real(self, batch)
        return out * float("nan") if first <= calls[0] <= (last or calls[0]) else out

    monkeypatch.setattr(PairJitter, "forward", poisoned)


def test_a_run_with_a_few_nan_steps_finishes_with_them_counted_and_a_finite_model(tmp_path, tiles, monkeypatch):
    poison_steps(monkeypatch, 12, 13)  # two steps of epoch 2
    cfg = cfg_with(epochs=2, **{"train.max_nonfinite_steps": 2, "eval.generator_mode": "eval"})
    row = train_in(tmp_path, tiles, cfg)
    assert row["skipped_steps"] == 2
    assert pd.read_csv(tmp_path / "metrics/train_epochs.csv")["skipped_steps"].tolist() == [0, 2]
    assert all(np.isfinite(row[k]) for k in ("val_L1", "val_PSNR", "val_SSIM"))  # validated in eval mode
    G, _ = generator_file.load(tmp_path / "generator.pt")
    G.eval()
    assert torch.isfinite(G(torch.rand(1, 3, 64, 64) * 2 - 1)).all()


def test_nan_losses_stop_training_and_keep_the_last_good_checkpoint(tmp_path, tiles, monkeypatch):
    poison_steps(monkeypatch, 12)  # from the 12th batch (epoch 2) on, every input is NaN
    with pytest.raises(Pix2PixError, match=r"in a row had a NaN or infinite loss \(train.max_nonfinite_steps is 2\)"):
        train_in(tmp_path, tiles, cfg_with(epochs=3, **{"train.max_nonfinite_steps": 2, "train.log_every": 1}))
    state = checkpoints.read(tmp_path / "checkpoints/last.pt", torch.device("cpu"))
    assert state.epoch == 1 and all(torch.isfinite(t).all() for t in state.training["generator"].values())


# -- hostile and failing files -----------------------------------------------------------------------

def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = RunsCode(marker)
    for name in ("last.pt", "generator.pt"):
        torch.save({"generator": evil}, tmp_path / name, pickle_module=pickle)
    with pytest.raises(Pix2PixError, match="last.pt: unreadable checkpoint"):
        checkpoints.read(tmp_path / "last.pt", torch.device("cpu"))
    with pytest.raises(Pix2PixError, match="generator.pt: not a generator file of pix2pix-dvc"):
        generator_file.load(tmp_path / "generator.pt")
    assert not marker.exists()


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from pix2pix import reporting
from pix2pix.errors import Pix2PixError
from test_reliability import cfg_with, train_in

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails (EFBIG) instead of killing
real = reporting.Reporter.checkpoint

def checkpoint(self, state):
    if state.epoch == 2:  # from now on the kernel refuses to grow any file past 4 KiB
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    real(self, state)

reporting.Reporter.checkpoint = checkpoint
try:
    train_in(Path(sys.argv[1]), Path(sys.argv[2]), cfg_with(epochs=3))
except Pix2PixError as err:
    print(err)
    sys.exit(3)
"""


def test_a_real_write_failure_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, tiles):
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path), str(tiles)], capture_output=True,
                            text=True, timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"})
    assert result.returncode == 3, result.stderr[-3000:]
    assert result.stdout.strip().endswith("next.pt: could not write the checkpoint (the write stopped short: the disk is "
                                          "full or the file is over a size limit); free disk space. The previous "
                                          "checkpoint is intact; re-run to resume from it")
    assert checkpoint_epoch(tmp_path) == 1
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))  # the half-written temp file is gone


def test_a_full_disk_error_names_the_file_and_the_fix(tmp_path, monkeypatch):
    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", full)
    with pytest.raises(Pix2PixError, match="next.pt: could not write the checkpoint \\(No space left on device\\); "
                                           "free disk space. The previous checkpoint is intact"):
        checkpoints.save_last(checkpoints.Checkpoint(training={"epoch": 1}, rng=[], params={}, dataset_hash="",
                                                     generator={}, report={}), tmp_path)


# -- tracking faults ---------------------------------------------------------------------------------

def test_an_unreachable_mlflow_server_fails_before_any_work(tmp_path, tiles, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = cfg_with(**{"mlflow.enabled": True, "mlflow.tracking_uri": f"http://127.0.0.1:{port}"})
    with pytest.raises(Pix2PixError, match=f"mlflow.tracking_uri http://127.0.0.1:{port} does not answer"):
        train_in(tmp_path, tiles, cfg)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics").exists()


def test_a_store_gone_mid_run_loses_mlflow_records_not_the_training(tmp_path, tiles, monkeypatch, caplog):
    """From the second epoch's metrics on, every call to the store fails (a server that went away):
    each is skipped with a warning and the run finishes with all its DVC outputs."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    gone, failed = [False], []

    def failing(real):
        def call(*args, **kwargs):
            gone[0] = gone[0] or kwargs.get("step") == 2
            if gone[0]:
                failed.append(real.__name__)
                raise ConnectionError("store went away")
            return real(*args, **kwargs)
        return call

    for name in ("log_metrics", "log_artifact", "end_run"):
        monkeypatch.setattr(mlflow, name, failing(getattr(mlflow, name)))
    try:
        with caplog.at_level(logging.WARNING):
            row = train_in(tmp_path, tiles, cfg_with(epochs=3, **{"mlflow.enabled": True}))
    finally:  # the failing end_run left the run active in this process: end it, or later tests inherit it
        monkeypatch.undo()
        mlflow.end_run()
    assert row["epoch"] == 3 and len(pd.read_csv(tmp_path / "metrics/train_epochs.csv")) == 3
    assert (tmp_path / "generator.pt").exists() and (tmp_path / "best.pt").exists()
    assert {"log_metrics", "log_artifact", "end_run"} <= set(failed)  # the store failed to the end
    for what in ("metrics of step 3", "artifact ", "the run's end"):
        assert f"MLflow store failed; {what}" in caplog.text
    assert "(ConnectionError: store went away). Training goes on; metrics/ has it" in caplog.text


# -- concurrency --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_dvc_repro_at_once_fails_on_the_lock_and_the_first_completes(tmp_path):
    env = init_repo(tmp_path, tiny_overrides(epochs=8))
    first = subprocess.Popen(["dvc", "repro"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        grid = tmp_path / "metrics/grids/epoch_001.png"
        while not grid.exists():  # wait until the first is inside the train stage
            assert first.poll() is None, first.stdout.read()
            time.sleep(0.2)  # a polling interval, not a timing assumption
        second = subprocess.run(["dvc", "repro"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "the first repro finished before the second started; lengthen its training"
        assert second.returncode != 0
        message = second.stdout + second.stderr  # DVC's read/write lock on the outputs in use
        assert "is busy" in message and ".dvc/tmp/rwlock" in message
    finally:
        out, _ = first.communicate(timeout=900)
    assert first.returncode == 0, out[-3000:]
    assert json.loads((tmp_path / "metrics/train.json").read_text())["epoch"] == 8
    assert "up to date" in run(["dvc", "status"], tmp_path, env).lower()


@pytest.mark.slow
def test_dvc_exp_run_with_a_misspelt_key_fails_before_any_work(tmp_path):
    """DVC refuses `-S` of a key params.yaml lacks; one forced in (`-S +key=...`, or by hand) is
    refused by the check_params stage, which runs before any other."""
    env = init_repo(tmp_path, tiny_overrides())
    for override, message in (("lamda_l1=50", "Could not override 'lamda_l1'"),
                              ("+lamda_l1=50", "error: params.yaml: unknown key 'lamda_l1'; did you mean 'lambda_l1'? "
                                               "allowed here: dataset, ")):
        result = subprocess.run(["dvc", "exp", "run", "-S", override], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode != 0 and message in result.stdout + result.stderr
        assert not [f for f in (tmp_path / "data").rglob("*") if f.is_file()]  # nothing downloaded
        assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_dvc_repro_with_a_bad_params_file_fails_in_check_params_before_any_download(tmp_path):
    env = init_repo(tmp_path, tiny_overrides(image_size=100))
    result = subprocess.run(["dvc", "repro"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "'image_size' is 100" in out and "a power of two >= 32" in out
    assert "Running stage 'check_params'" in out and "Running stage 'download'" not in out
    assert not [f for f in (tmp_path / "data").rglob("*") if f.is_file()]  # nothing downloaded
