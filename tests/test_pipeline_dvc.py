"""End to end, as a user runs it: a git repo, `dvc repro`, `dvc exp run -S`, `dvc metrics diff`."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from archives import ade20k_zip, write_cityscapes_zips
from conftest import ROOT, SHARED_DATA, needs_shared, tiny_overrides

OUTS = [
    "data/raw/synthetic/train/images", "data/tiles/manifest.csv", "checkpoints/last.pt",
    "models/generator.pt", "metrics/train.json", "metrics/train_epochs.csv",
    "metrics/grids/epoch_001.png", "metrics/grids/epoch_002.png", "metrics/eval.json",
    "metrics/eval_grid.png", "dvc.lock",
]


def run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def make_project(path, overrides: dict):
    """Copy the project into `path` as a fresh git + DVC repo, with params overridden."""
    for name in ("pix2pix", "stages"):
        shutil.copytree(ROOT / name, path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, path / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[leaf] = value
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def init_repo(path, overrides: dict, **env_extra):
    """A committed git + DVC repo holding the project; returns the env to run commands in."""
    make_project(path, overrides)
    env = {**os.environ, "PYTHONPATH": str(path), "MLFLOW_TRACKING_URI": f"sqlite:///{path}/mlflow.db",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"], **env_extra}
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "test"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.analytics", "false"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "project"]):
        run(cmd, path, env)
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    path = tmp_path_factory.mktemp("project")
    return path, init_repo(path, tiny_overrides())


@pytest.fixture(scope="module")
def reproduced(project):
    path, env = project
    run(["dvc", "repro"], path, env)
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", "baseline run"], path, env)
    return path, env


def test_repro_writes_every_declared_output(reproduced):
    path, _ = reproduced
    missing = [out for out in OUTS if not (path / out).exists()]
    assert not missing
    eval_metrics = json.loads((path / "metrics/eval.json").read_text())
    assert {"test_L1", "test_PSNR", "test_SSIM", "test_FID"} <= set(eval_metrics)
    assert eval_metrics["fid_extractor"] == "offline"
    epochs = (path / "metrics/train_epochs.csv").read_text().splitlines()
    assert "val_FID" in epochs[0] and len(epochs) == 3
    lock = yaml.safe_load((path / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"download", "prepare", "train", "evaluate"}


def test_repro_again_is_a_no_op(reproduced):
    path, env = reproduced
    assert "up to date" in run(["dvc", "status"], path, env).lower()


def test_exp_run_with_lambda_50_trains_with_50_and_changes_metrics(reproduced):
    path, env = reproduced
    run(["dvc", "exp", "run", "-S", "lambda_l1=50"], path, env)
    lock = yaml.safe_load((path / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["lambda_l1"] == 50
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], path, env))
    changed = {(f, k) for f, metrics in diff.items() for k, v in metrics.items() if v.get("diff")}
    assert {("metrics/eval.json", k) for k in ("test_L1", "test_PSNR", "test_SSIM", "test_FID")} <= changed
    # the MLflow run of the experiment recorded the value the training actually used
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("pix2pix").experiment_id])
    assert sorted(r.data.params["lambda_l1"] for r in runs) == ["100.0", "50.0"]
    for r in runs:  # FID every epoch, and the network that produced it
        assert len(client.get_metric_history(r.info.run_id, "val_FID")) == 2
        assert r.data.tags["fid_extractor"] == "offline"


@needs_shared
@pytest.mark.parametrize("dataset,tiles", [("cars", 149), ("facades", 606)])
def test_repro_on_a_real_dataset_through_the_mirror(tmp_path, dataset, tiles):
    env = init_repo(tmp_path, tiny_overrides(dataset=dataset, epochs=1, **{"optim.decay_epochs": 0}),
                    PIX2PIX_MIRROR=str(SHARED_DATA))
    run(["dvc", "repro"], tmp_path, env)
    manifest = (tmp_path / "data/tiles/manifest.csv").read_text().splitlines()
    assert len(manifest) - 1 == tiles
    assert json.loads((tmp_path / "metrics/eval.json").read_text())["test_images"] > 0
    assert (tmp_path / "metrics/grids/epoch_001.png").exists()


@pytest.mark.parametrize("dataset", ["cityscapes", "ade20k-outdoor"])
def test_repro_on_archives_laid_out_like_cityscapes_and_ade20k(tmp_path, dataset):
    """The user's own archives in `data.mirror`: download -> prepare -> train -> evaluate."""
    mirror = tmp_path / "archives"
    write_cityscapes_zips(mirror)
    (mirror / "ADEChallengeData2016.zip").write_bytes(ade20k_zip())
    project = tmp_path / "project"
    project.mkdir()
    overrides = tiny_overrides(dataset=dataset, epochs=1, **{"optim.decay_epochs": 0, "data.mirror": str(mirror),
                                                               "data.val_fraction": 0.34, "eval.grid_samples": 1})
    env = init_repo(project, overrides)
    run(["dvc", "repro"], project, env)
    assert json.loads((project / "metrics/eval.json").read_text())["test_images"] >= 1


def test_a_failing_stage_exits_non_zero_with_one_line_and_no_output(tmp_path):
    make_project(tmp_path, tiny_overrides(dataset="cityscapes"))  # no archives supplied
    result = subprocess.run([sys.executable, "stages/download.py"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: dataset 'cityscapes' has no public download")
    assert "Traceback" not in result.stderr
    raw = tmp_path / "data" / "raw"
    assert not (raw / "cityscapes").exists() and not list(raw.glob(".cityscapes*"))  # no output, no temp
