"""A throwaway git + DVC repo holding this project, driven the way a user drives it."""

import hashlib
import os
import shutil
import subprocess
import sys

import yaml

from conftest import ROOT


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
    write_params(path, overrides)


def write_params(path, overrides: dict):
    """path/params.yaml: the project's, with dotted keys overridden."""
    (path / "params.yaml").write_text(overridden((ROOT / "params.yaml").read_text(), overrides))


def overridden(params_text: str, overrides: dict) -> str:
    """params.yaml text with dotted keys set to new values."""
    params = yaml.safe_load(params_text)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[leaf] = value
    return yaml.safe_dump(params, sort_keys=False)


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


def locked_md5(path, out: str) -> str:
    """The md5 dvc.lock in the repo at `path` records for the output `out` (whichever stage makes it)."""
    lock = yaml.safe_load((path / "dvc.lock").read_text())["stages"]
    return next(o["md5"] for stage in lock.values() for o in stage.get("outs", []) if o["path"] == out)


def md5(path) -> str:
    """A file's md5, as dvc.lock and the MLflow tag model_md5 give it."""
    return hashlib.md5(path.read_bytes()).hexdigest()
