"""MLflow the way its users expect: each run's generator as a model that loads without unpickling,
equal to `pix2pix translate`; the registry; serving over REST; stepped grids and system metrics."""

import json
import os
import pickle
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from archives import RunsCode
from conftest import ROOT, free_port, run_files, tiny_overrides, wait_until_answers
from pix2pix.cli import app
from pix2pix.config import load_config
from pix2pix.data.download import fetch
from pix2pix.data.tiles import build_tiles
from pix2pix.errors import Pix2PixError
from pix2pix.trainer import train
from pix2pix.translate import load_model, read_input, translate_image

NAME = "pix2pix-test"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny training tracked in its own SQLite store, its model registered as NAME; (folder, env)."""
    folder = tmp_path_factory.mktemp("tracked")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db", "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}
    with pytest.MonkeyPatch.context() as m:
        for key, value in env.items():
            m.setenv(key, value)
        cfg = load_config(ROOT / "params.yaml", tiny_overrides(epochs=3, **{"mlflow.registered_model": NAME}))
        build_tiles(fetch(cfg, folder / "raw"), folder / "tiles", cfg)
        train(cfg, folder / "tiles", folder / "checkpoints", folder / "generator.pt", folder / "best.pt",
              run_files(folder))
    return folder, env


@pytest.fixture
def store(trained, monkeypatch):
    folder, env = trained
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import mlflow

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("pix2pix").experiment_id], "tags.dataset = 'synthetic'")
    return folder, client, run


def a_mask(size=(70, 90)) -> np.ndarray:
    """A car's class ids as a grey RGB image (R = G = B = id), as a client sends one."""
    from pix2pix.data import synthetic

    _, mask = synthetic.sample(0, 3)
    return np.repeat(np.asarray(Image.fromarray(mask).resize(size[::-1], Image.NEAREST))[..., None], 3, axis=2)


def translated(folder, image, mode="paper", seed=0):
    G, model = load_model(str(folder / "generator.pt"), torch.device("cpu"))
    path = folder / "input.png"
    Image.fromarray(image).save(path)
    return translate_image(G, read_input(path, model), model, mode, 8, torch.device("cpu"), seed=seed)


def test_the_run_logs_its_generator_as_a_model_that_predicts_what_translate_gives(store):
    import mlflow

    folder, client, run = store
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    signature = model.metadata.signature
    assert signature.inputs.inputs[0].shape == (-1, -1, -1, 3) and str(signature.inputs.inputs[0].type) == "uint8"
    batch = np.stack([a_mask(), a_mask()[:, ::-1]])
    for params in ({"mode": "paper", "seed": 0}, {"mode": "paper", "seed": 5}, {"mode": "eval"}):
        out = model.predict(batch, params=params)
        assert out.dtype == np.uint8 and out.shape == batch.shape
        for image, result in zip(batch, out):
            assert np.array_equal(result, translated(folder, image, params["mode"], params.get("seed", 0)))
    files = [p.name for p in Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model")).rglob("*")]
    assert "generator.pt" in files and not [f for f in files if f.endswith((".pkl", ".pickle"))]  # code as text


def test_a_model_whose_weights_would_run_code_is_refused_where_it_loads(store, tmp_path):
    """Its MLflow model loads the generator file with weights_only, as translate does: a file
    built to run code when unpickled is refused by the pyfunc model and by translate, and runs nothing."""
    import mlflow

    _, _, run = store
    evil = RunsCode(tmp_path / "pwned")
    hostile = tmp_path / "generator.pt"
    torch.save({"generator": evil}, hostile, pickle_module=pickle)
    with mlflow.start_run() as other:
        mlflow.pyfunc.log_model(name="model", python_model=str(ROOT / "pix2pix" / "mlflow_model.py"),
                                artifacts={"generator": str(hostile)}, pip_requirements=["mlflow"])
    with pytest.raises(Exception, match="not a generator file of pix2pix-dvc"):
        mlflow.pyfunc.load_model(f"runs:/{other.info.run_id}/model")
    with pytest.raises(Pix2PixError, match="generator.pt: not a generator file of pix2pix-dvc"):
        load_model(f"runs:/{other.info.run_id}/model", torch.device("cpu"))
    assert not evil.marker.exists()


def test_the_registry_takes_each_runs_model_and_translate_reads_it_by_version_and_alias(store, tmp_path, monkeypatch):
    folder, client, run = store
    (version,) = client.search_model_versions(f"name='{NAME}'")
    assert version.run_id == run.info.run_id and int(version.version) == 1
    client.set_registered_model_alias(NAME, "champion", "1")
    Image.fromarray(a_mask()).save(tmp_path / "mask.png")
    expected = translated(folder, a_mask())
    monkeypatch.chdir(ROOT)  # the project's params.yaml; MLFLOW_TRACKING_URI names the store
    for uri in (f"models:/{NAME}/1", f"models:/{NAME}@champion", f"runs:/{run.info.run_id}/model"):
        out = tmp_path / uri.replace("/", "_").replace(":", "").replace("@", "_")
        result = CliRunner().invoke(app, ["translate", uri, str(tmp_path / "mask.png"), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert np.array_equal(np.asarray(Image.open(out / "mask.png")), expected), uri


def test_a_run_or_model_not_in_the_store_is_one_line_naming_the_store_and_the_committed_model(store, monkeypatch):
    folder, _, _ = store
    monkeypatch.chdir(ROOT)
    for uri in ("runs:/0123456789abcdef0123456789abcdef/model", f"models:/{NAME}/99", "models:/nobody@champion"):
        result = CliRunner().invoke(app, ["translate", uri, str(folder / "raw")])
        assert result.exit_code == 1
        line = result.output.strip().splitlines()[-1]
        assert line.startswith(f"error: {uri}: not in the MLflow store sqlite:///{folder}/mlflow.db (") and line.endswith(
            "the committed model is models/generator.pt (`dvc pull` gets it)")


def test_every_epochs_grid_is_a_stepped_image_and_system_metrics_are_kept(store):
    folder, client, run = store
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    steps = sorted(int(p.split("+step+")[1].split("+")[0]) for p in images if p.startswith("images/val_grid+step+")
                   and p.endswith(".png"))
    assert steps == [1, 2, 3] and run.data.tags["mlflow.loggedImages"].lower() == "true"  # the UI looks for it
    system = [k for k in run.data.metrics if k.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system


def test_the_evolution_picture_shows_the_val_samples_from_the_first_epoch_to_the_last(store):
    folder, client, run = store
    evolution = np.asarray(Image.open(run_files(folder).evolution))
    size, header = 64, 28
    assert evolution.shape == (header + 2 * size, 5 * size, 3)  # input, epochs 1, 2, 3, target; 2 samples
    first, last = (np.asarray(Image.open(folder / "metrics/grids" / f"epoch_00{e}.png"))[header:] for e in (1, 3))
    assert np.array_equal(evolution[header:, size:2 * size], first[:, size:2 * size])  # epoch 1's outputs
    assert np.array_equal(evolution[header:, 3 * size:4 * size], last[:, size:2 * size])  # epoch 3's
    assert np.array_equal(evolution[header:, :size], last[:, :size])  # the inputs
    assert "evolution.png" in [a.path for a in client.list_artifacts(run.info.run_id)]


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_rest_request_with_what_translate_gives(store):
    folder, _, _ = store
    port = free_port()
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}/1",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/ping", server, 180, "the model server")  # it loads the model first
        body = json.dumps({"inputs": a_mask()[None].tolist(), "params": {"mode": "paper", "seed": 0}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        answer = np.asarray(json.load(urllib.request.urlopen(request, timeout=120))["predictions"], dtype=np.uint8)
        assert np.array_equal(answer[0], translated(folder, a_mask()))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
