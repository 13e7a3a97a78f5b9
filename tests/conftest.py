from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import urllib.request
from pathlib import Path

# pytest-xdist runs the suite in one process per core (pyproject's addopts: -n auto). Each then
# computes on one thread, it and the stages it starts: two processes of two threads each on 2 cores
# spin against each other and are slower than one test at a time. Set before torch is imported.
# `--dist loadscope` keeps each module's tests in one process, so a module's fixtures (the FID
# network's features, the MLflow UI's two runs) are made once; a session's fixtures (the shared
# `reproduced` pipeline) are made in each process whose tests use them.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///" + str(
    Path(os.environ.get("TMPDIR", "/tmp")) / f"pix2pix-tests-mlflow-{WORKER or 'main'}.db"))  # a store per process


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_mlflow_run_left():
    """A test that trains in this process must not leave its MLflow run active: the next training
    in the process would fail to start its own."""
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        left = mlflow.active_run().info.run_id
        mlflow.end_run()
        pytest.fail(f"the test left MLflow run {left} active")


def tiny_overrides(fid: bool = False, **extra) -> dict:
    """Dotted overrides for a seconds-long CPU run. FID is off unless asked for: the Inception
    network's load and passes add seconds to every tiny pipeline (tests of FID itself turn it on)."""
    base = {
        "dataset": "synthetic", "image_size": 64, "epochs": 2, "batch_size": 2, "data.synthetic_count": 24,
        "model.ngf": 8, "model.ndf": 8, "eval.grid_samples": 2, "eval.fid_extractor": "auto" if fid else "none",
        "train.log_every": 2,
    }
    return {**base, **extra}


@pytest.fixture
def tiny_cfg():
    from pix2pix.config import load_config

    return load_config(ROOT / "params.yaml", tiny_overrides(**{"mlflow.enabled": False}))


# The offline mirror of real datasets: <PIX2PIX_TEST_SHARED>/data, by default ../shared/data beside the
# checkout. PIX2PIX_TEST_SHARED=none hides it: the suite then runs as it does in a clone without the
# mirror (CI runs the tests marked `mirror` both ways).
_SHARED = os.environ.get("PIX2PIX_TEST_SHARED")
if _SHARED == "none":
    SHARED_DATA = Path(os.devnull) / "data"  # never a folder (the device file has no entries): no mirror
else:
    SHARED_DATA = (Path(_SHARED) if _SHARED else ROOT.parent / "shared") / "data"
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=(
    "PIX2PIX_TEST_SHARED=none hides the offline dataset mirror" if _SHARED == "none"
    else f"offline dataset mirror {SHARED_DATA} is absent"))
mirror_or_synthetic = pytest.mark.mirror  # reads real data from the mirror when it is there, synthetic otherwise


@pytest.fixture(scope="session")
def project(tmp_path_factory):
    from dvc_project import init_repo

    path = tmp_path_factory.mktemp("project")
    return path, init_repo(path, tiny_overrides(fid=True))  # the pipeline as users run it, FID on


@pytest.fixture(scope="session")
def reproduced(project):
    from dvc_project import run

    path, env = project
    run(["dvc", "repro"], path, env)
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", "baseline run"], path, env)
    return path, env


@pytest.fixture(scope="session")
def two_runs(reproduced):
    """The baseline (lambda_l1 1000, params.yaml) plus `dvc exp run -S lambda_l1=50`: two MLflow runs in one store."""
    from dvc_project import run

    path, env = reproduced
    run(["dvc", "exp", "run", "-S", "lambda_l1=50"], path, env)
    return path, env


def params_doc_rows() -> list[list[str]]:
    """docs/params.md's table, a list of cells per key row: `key(s)`, default, meaning, re-runs."""
    rows = []
    for line in (ROOT / "docs" / "params.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows.append(cells)
    return rows


def stage_args(stage: str) -> list[str]:
    """The arguments of a dvc.yaml stage's command after `python -m stages.X`: the paths it uses."""
    import shlex

    import yaml

    return shlex.split(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["cmd"])[3:]


def run_files(folder: Path):
    """A training's report files under `folder`, at the paths dvc.yaml's train stage gives them."""
    from pix2pix.reporting import RunFiles

    options = stage_args("train")[5:]  # --metrics metrics/train.json --epochs ...
    return RunFiles(**{name.removeprefix("--"): folder / path for name, path in zip(options[::2], options[1::2])})


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("PIX2PIX_TEST_ARTIFACTS", ROOT / "test-artifacts"))
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromium-driver are not "
                                                                           "installed (.ci/run installs both)")


@pytest.fixture
def browser():
    """Headless Chromium driven by selenium: tests wait for what a page shows, never for a time."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--window-size=1100,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def free_port() -> int:
    """A loopback port nobody listens on now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answers(url: str, proc, timeout: float, what: str) -> None:
    """Poll `url` until the server `proc` started answers (it needs seconds to start). Fails if `proc`
    exits first, with its stderr's tail when that is a pipe, or if nothing answers within `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert proc.poll() is None, f"{what} exited early" + (f":\n{proc.stderr.read()[-3000:]}" if proc.stderr else "")
            assert time.monotonic() < deadline, f"{what} did not answer within {timeout} s"
            time.sleep(0.5)  # a polling interval, not a timing assumption
