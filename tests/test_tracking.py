"""What a training leaves for people and tools to read: step losses, the curves image, metrics files."""

import dataclasses
import json
import logging
import re
import sys

import pytest
import torch
from PIL import Image

from conftest import ROOT, tiny_overrides
from dvc_project import overridden
from pix2pix.config import load_config
from pix2pix.curves import save_curves
from pix2pix.data.augment import PairJitter
from pix2pix.reporting import better
from pix2pix.losses import LOSS_NAMES
from pix2pix.trainer import Pix2Pix, train_epoch
from pix2pix.tracking import EpochLog


def test_step_losses_are_window_means_that_add_up_to_the_epoch_mean(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, batch_size=2, train=dataclasses.replace(tiny_cfg.train, log_every=2))
    data = torch.randint(0, 256, (10, 6, 64, 64), dtype=torch.uint8)  # 5 steps: reads at steps 0, 2, 4
    logged = []
    epoch = train_epoch(Pix2Pix(cfg, torch.device("cpu")), PairJitter(64, flip=False), data, cfg,
                        lambda losses, step: logged.append((step, losses)))
    assert [step for step, _ in logged] == [1, 3, 5]
    images = [2, 4, 4]  # images covered by each window
    for name in LOSS_NAMES:
        mean = sum(n * losses[name] for n, (_, losses) in zip(images, logged)) / 10
        assert mean == pytest.approx(epoch[name], rel=1e-5)


def test_best_epoch_is_lowest_fid_else_lowest_l1():
    assert better({"val_FID": 90.0, "val_L1": 0.3}, {"val_FID": 100.0, "val_L1": 0.1})
    assert not better({"val_FID": 110.0, "val_L1": 0.1}, {"val_FID": 100.0, "val_L1": 0.3})
    assert better({"val_L1": 0.1}, {"val_L1": 0.2}) and not better({"val_L1": 0.3}, {"val_L1": 0.2})
    assert better({"val_L1": 9.0}, None)


def rows(fid: bool):
    return [{"epoch": e, "G_GAN": 1.0 / e, "G_L1": 0.3, "D_real": 0.6, "D_fake": 0.5, "val_L1": 0.2,
             "val_SSIM": 0.4, "val_PSNR": 14.0 + e, **({"val_FID": 300.0 - 10 * e} if fid else {})} for e in (1, 2, 3)]


def test_curves_image_is_a_png_and_draws_the_fid_series(tmp_path):
    save_curves(rows(fid=True), tmp_path / "with.png", "title")
    save_curves(rows(fid=False), tmp_path / "without.png", "title")  # FID absent: still an image
    with_fid, without = (Image.open(tmp_path / name).convert("RGB") for name in ("with.png", "without.png"))
    assert with_fid.size == without.size and with_fid.width > 3 * with_fid.height
    assert with_fid.tobytes() != without.tobytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_epoch_log_keeps_summary_values_in_the_json_only(tmp_path):
    log = EpochLog(tmp_path / "train.json", tmp_path / "train_epochs.csv", summary={"device": "cpu"})
    log.add({"epoch": 1, "val_L1": 0.5}, best_epoch=1)
    log.add({"epoch": 2, "val_L1": 0.6}, best_epoch=1)
    assert json.loads((tmp_path / "train.json").read_text()) == {"epoch": 2, "val_L1": 0.6, "device": "cpu",
                                                                 "best_epoch": 1}
    assert (tmp_path / "train_epochs.csv").read_text().splitlines() == ["epoch,val_L1", "1,0.5", "2,0.6"]


@pytest.mark.parametrize("uri,expected", [
    ("sqlite:///mlflow.db", "sqlite:///{root}/mlflow.db"),   # relative: at the project root
    ("sqlite:////data/m.db", "sqlite:////data/m.db"),        # absolute: as given
    ("mlruns", "{root}/mlruns"),
    ("/srv/mlruns", "/srv/mlruns"),
    ("file:///srv/mlruns", "file:///srv/mlruns"),
    ("http://mlflow.example:5000", "http://mlflow.example:5000"),
])
def test_a_relative_store_resolves_at_dvc_root_where_dvc_sets_it(uri, expected, tmp_path, monkeypatch):
    """Queued experiments run in temporary copies; DVC_ROOT names the workspace they came from."""
    from pix2pix.tracking import local_store, tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)
    assert tracking_uri(None) == expected.format(root=tmp_path)
    monkeypatch.delenv("DVC_ROOT")  # outside DVC: the current folder
    assert tracking_uri(None) == expected.format(root=tmp_path.parent)
    store = local_store(tracking_uri(None))
    assert (store is None) == uri.startswith("http") and (store is None or store.is_absolute())


def test_the_store_without_given_params_is_the_one_the_project_params_file_names(tmp_path, monkeypatch):
    from pix2pix.errors import Pix2PixError
    from pix2pix.tracking import project_tracking_uri, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Pix2PixError, match="params.yaml: no such file, so no MLflow store is named; run from the "
                                           "project folder or set MLFLOW_TRACKING_URI"):
        project_tracking_uri()
    (tmp_path / "params.yaml").write_text(overridden((ROOT / "params.yaml").read_text(),
                                                     {"mlflow.tracking_uri": "sqlite:///elsewhere.db"}))
    assert project_tracking_uri() == tracking_uri(None) == f"sqlite:///{tmp_path}/elsewhere.db"


def test_the_progress_bar_covers_the_whole_run_with_its_eta(tmp_path, capsys):
    from conftest import run_files
    from pix2pix.data.download import fetch
    from pix2pix.data.tiles import build_tiles
    from pix2pix.trainer import train

    cfg = load_config(ROOT / "params.yaml", tiny_overrides(**{"mlflow.enabled": False}))
    build_tiles(fetch(cfg, tmp_path / "raw"), tmp_path / "tiles", cfg)
    root, console = logging.getLogger(), logging.StreamHandler(sys.stderr)  # as the stages log, into the capture
    level = root.level
    root.addHandler(console)
    root.setLevel(logging.INFO)
    try:
        train(cfg, tmp_path / "tiles", tmp_path / "ck", tmp_path / "g.pt", tmp_path / "b.pt", run_files(tmp_path))
    finally:
        root.removeHandler(console)
        root.setLevel(level)
    summary = json.loads(run_files(tmp_path).metrics.read_text())
    assert 0 < summary["val_L1_mean_image"] < 1 and "val_L1" in summary  # the floor beside the model's L1
    assert "images_per_s" not in summary and "mlflow_run_id" not in summary  # what a re-run reproduces, only
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "36/36 [" in err and "18/36 [" in err  # 18 images an epoch, counted over both epochs
    assert re.search(r"18/36 \[\d\d:\d\d<\d\d:\d\d", err)  # half-way: elapsed<remaining of the run
    logged = [m.start() for m in re.finditer(r"epoch \d: lr=", err)]
    assert len(logged) == 2 and all(err[i - 1] in "\r\n" for i in logged)  # each on a line of its own, not in the bar


def test_the_mean_image_baseline_is_the_l1_of_answering_every_input_with_the_mean_target():
    from pix2pix.evaluation import mean_image_l1, mean_target

    train = torch.randint(0, 256, (70, 6, 8, 8), dtype=torch.uint8)  # more than one chunk of 64
    val = torch.randint(0, 256, (5, 6, 8, 8), dtype=torch.uint8)
    mean = train[:, 3:].float().div(127.5).sub(1).mean(0)
    torch.testing.assert_close(mean_target(train, 8), mean)
    expected = ((mean.clamp(-1, 1) + 1) / 2 - (val[:, 3:].float() / 255)).abs().mean().item()
    assert mean_image_l1(mean_target(train, 8), val, "val") == {"val_L1_mean_image": pytest.approx(expected, abs=1e-6)}
    same = train[:1].repeat(3, 1, 1, 1)  # every target the same image: the mean answers it exactly
    assert mean_image_l1(mean_target(same, 8), same, "test")["test_L1_mean_image"] == pytest.approx(0, abs=1e-6)
    # train tiles at the load size: their mean is brought to the val size
    flat = torch.full((3, 6, 9, 9), 200, dtype=torch.uint8)
    assert mean_target(flat, 8).shape == (3, 8, 8)
    torch.testing.assert_close(mean_target(flat, 8), torch.full((3, 8, 8), 200 / 127.5 - 1))


def test_evaluate_scores_the_final_and_the_best_generator_each_under_its_own_keys(tmp_path, tiny_cfg):
    """eval.json's test_* are the final generator's, best_test_* the best epoch's: each equal to
    scoring that file's generator on the test tiles (swapping the two files would fail this)."""
    from pix2pix import generator_file
    from pix2pix.data.device_data import load_split
    from pix2pix.data.download import fetch
    from pix2pix.data.tiles import build_tiles, read_info
    from pix2pix.evaluation import evaluate, fid_scorer, score
    from pix2pix.models import build_generator

    build_tiles(fetch(tiny_cfg, tmp_path / "raw"), tmp_path / "tiles", tiny_cfg)
    description = generator_file.describe(tiny_cfg, read_info(tmp_path / "tiles"))
    for epoch, name in ((2, "final.pt"), (1, "best.pt")):
        torch.manual_seed(epoch)  # two different generators
        generator_file.save(build_generator(tiny_cfg), epoch, description, tmp_path / name)
    metrics = evaluate(tiny_cfg, tmp_path / "final.pt", tmp_path / "best.pt", tmp_path / "tiles", tmp_path / "eval.json",
                       tmp_path / "grid.png", tmp_path / "grid_best.png")
    test = load_split(tmp_path / "tiles", "test", "AtoB", size=64)
    scorer = fid_scorer(test, "none", "cpu")
    for name, prefix in (("final.pt", "test"), ("best.pt", "best_test")):
        expected, _ = score(generator_file.load(tmp_path / name)[0], test, tiny_cfg.eval.generator_mode, scorer, prefix,
                            tiny_cfg.seed)
        assert {k: metrics[k] for k in expected} == expected
    assert metrics["test_L1"] != metrics["best_test_L1"] and metrics["best_epoch"] == 1
    assert metrics["test_images"] == len(test) and json.loads((tmp_path / "eval.json").read_text()) == metrics
