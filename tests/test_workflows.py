"""The README's workflows as a newcomer meets them, each ending where the next can start: the quick
try, a failed experiment and its undo, and a team sharing a model through a DVC remote."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, tiny_overrides
from dvc_project import init_repo, locked_md5, md5, run

pytestmark = pytest.mark.slow  # whole pipelines and DVC commands


def readme_block(heading: str) -> str:
    section = (ROOT / "README.md").read_text().split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="the project is not a git checkout: nothing to clone")
def test_a_clone_of_this_repository_finds_the_committed_pipeline_current(tmp_path):
    """The committed dvc.lock and metrics/ come from a run of the committed code and params: a clone
    asks only for outputs missing from its (empty) cache, never for a stage whose code, params or
    inputs changed since."""
    clone = tmp_path / "clone"
    env = {**os.environ, "PYTHONPATH": str(clone)}
    run(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path, env)
    status = yaml.safe_load(run(["dvc", "status", "--json"], clone, env))
    missing = {"not in cache", "deleted"}  # outputs, and deps that are upstream outputs, a clone lacks
    stale = {stage: entry for stage, entries in status.items() for entry in entries
             if set(entry) - {"changed outs", "changed deps"}
             or any(not isinstance(v, str) or v not in missing for key in entry for v in entry[key].values())}
    assert stale == {}, "dvc.lock is not the committed code's: re-record it with `dvc repro`"


def test_the_readme_quick_try_runs_as_written_and_leaves_the_workspace_as_it_was(tmp_path):
    env = init_repo(tmp_path, {})  # the committed params.yaml, as a new user has it
    env.pop("MLFLOW_TRACKING_URI")  # and its store, sqlite:///mlflow.db, relative to the workspace
    before = yaml.safe_load(run(["dvc", "status", "--json"], tmp_path, env))
    result = subprocess.run(["bash", "-e", "-c", readme_block("Quick try")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    outputs = sorted(p.name for p in (tmp_path / "translated").iterdir())
    masks = sorted(p.with_suffix(".png").name for p in (tmp_path / "my_masks").glob("*/labels/*"))
    assert len(masks) == 3 and outputs == masks  # one photo for each of `synth --count 3`'s masks
    # the defaults are where they were: nothing tracked changed, and DVC asks for what it asked before
    assert run(["git", "status", "--porcelain"], tmp_path, env).split("\n")[:-1] == [
        "?? my_masks/", "?? quick-try.pt", "?? translated/"]
    assert yaml.safe_load(run(["dvc", "status", "--json"], tmp_path, env)) == before
    assert "quick-try" in run(["dvc", "exp", "ls", "--name-only"], tmp_path, env).split()
    # the run of the experiment's deleted copy of the repo is in the workspace's store, whole
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("pix2pix")
    [tracked] = client.search_runs([experiment.experiment_id])
    assert tracked.data.tags["dvc_exp_name"] == "quick-try" and tracked.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "val_FID")] == [1, 2]
    images = {a.path.split("+timestamp+")[0] for a in client.list_artifacts(tracked.info.run_id, "images")}
    assert images == {"images/val_grid+step+1", "images/val_grid+step+2"}
    assert Path(tracked.info.artifact_uri.removeprefix("file://")).is_relative_to(tmp_path / "mlruns")


def test_a_failed_experiment_changes_nothing_but_params_yaml_and_one_line_undoes_it(tmp_path):
    env = init_repo(tmp_path, tiny_overrides())
    run(["dvc", "repro", "check_params"], tmp_path, env)
    run(["git", "add", "-A"], tmp_path, env)
    run(["git", "commit", "-qm", "checked"], tmp_path, env)
    failed = subprocess.run(["dvc", "exp", "run", "-S", "lambda_l1=abc"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert failed.returncode != 0 and "error: params.yaml: 'lambda_l1' must be float, got 'abc'" in failed.stderr
    assert (tmp_path / "data/params.ok").exists()  # a persisted output: the failed check left it
    assert "lambda_l1: abc" in (tmp_path / "params.yaml").read_text()  # DVC keeps an experiment's -S values
    run(["bash", "-c", "git show HEAD:params.yaml > params.yaml"], tmp_path, env)  # the README's undo
    assert run(["git", "status", "--porcelain"], tmp_path, env) == ""
    assert "up to date" in run(["dvc", "status", "check_params"], tmp_path, env)


def test_a_team_shares_the_model_through_a_remote_and_the_artifact_registry(reproduced, tmp_path):
    """The committed run pushed to a local-folder remote; a teammate's clone pulls it, finds the
    pipeline up to date and translates without training; the model is fetched by its artifact name."""
    path, env = reproduced
    origin, remote = tmp_path / "origin", tmp_path / "remote"
    run(["git", "clone", "-q", str(path), str(origin)], tmp_path, env)
    env = {**env, "PYTHONPATH": str(origin)}
    run(["dvc", "cache", "dir", "--local", str(path / ".dvc" / "cache")], origin, env)  # the run's cache
    run(["dvc", "remote", "add", "-d", "store", str(remote)], origin, env)
    run(["git", "commit", "-qam", "a DVC remote"], origin, env)
    run(["dvc", "push"], origin, env)
    run(["git", "tag", "-a", "generator@v1.0.0", "-m", "tiny synthetic cars"], origin, env)

    teammate = tmp_path / "teammate"
    run(["git", "clone", "-q", str(origin), str(teammate)], tmp_path, env)
    env = {**env, "PYTHONPATH": str(teammate), "MLFLOW_TRACKING_URI": f"sqlite:///{teammate}/mlflow.db"}
    run(["dvc", "pull"], teammate, env)
    assert "up to date" in run(["dvc", "status"], teammate, env)  # nothing to train
    model = teammate / "models/generator.pt"
    assert md5(model) == locked_md5(teammate, "models/generator.pt")  # the committed model
    run(["pix2pix", "synth", "masks", "--count", "1"], teammate, env)
    run(["pix2pix", "translate", "models/generator.pt", "masks", "--out", "translated"], teammate, env)
    assert len(list((teammate / "translated").iterdir())) == 1

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run(["dvc", "artifacts", "get", str(origin), "generator", "-o", "generator.pt"], elsewhere, env)
    assert md5(elsewhere / "generator.pt") == md5(model)
    declared = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]["generator"]
    assert declared["type"] == "model" and declared["path"] == "models/generator.pt"
    assert json.loads(json.dumps(declared["labels"])) == ["pix2pix", "image-to-image", "gan"]
