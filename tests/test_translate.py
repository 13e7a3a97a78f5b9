"""Using a trained generator: translate any image, export it, and check the machine."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from conftest import ROOT
from pix2pix import checkpoints, generator_file
from pix2pix.cli import app
from pix2pix.data.palettes import PALETTES
from pix2pix.trainer import Pix2Pix
from pix2pix.translate import load_model, tiled, translate_image

CARS_RECIPE = {"label_half": "A", "palette": PALETTES["cars"].to_dict(), "fit": "crop"}  # tiles.Recipe.info of cars


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from pix2pix.config import flatten, load_config

    from conftest import tiny_overrides

    cfg = load_config(ROOT / "params.yaml", tiny_overrides(**{"mlflow.enabled": False}))
    folder = tmp_path_factory.mktemp("models")
    engine = Pix2Pix(cfg, torch.device("cpu")).engine
    description = generator_file.describe(cfg, CARS_RECIPE)
    generator_file.save(engine.G, 2, description, folder / "generator.pt")
    state = checkpoints.Checkpoint(engine.state_dict(), [checkpoints.rng_states()], flatten(cfg), "", description, {})
    checkpoints.save(state.to_dict(), folder / "last.pt")
    return folder


def test_any_size_comes_back_at_its_size_whole_or_tiled(model_files):
    G, model = load_model(str(model_files / "generator.pt"), torch.device("cpu"))
    assert (model["image_size"], model["dataset"], model["direction"]) == (64, "synthetic", "AtoB")
    rng = np.random.default_rng(0)
    for scale in ("train", "native"):
        for h, w in ((37, 50), (64, 64), (90, 300)):  # native: 90 x 300 is over max_pixels, so tiled
            rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            out = translate_image(G, rgb, model, "eval", 4, torch.device("cpu"), scale, max_pixels=64 * 64 * 4)
            assert out.shape == (h, w, 3) and out.dtype == np.uint8


def test_a_real_generator_tiled_gives_each_tile_its_own_output_blended_where_tiles_overlap(model_files):
    G, _ = load_model(str(model_files / "generator.pt"), torch.device("cpu"))
    x = torch.rand(1, 3, 64, 192) * 2 - 1  # tiles start at columns 0, 48, 96 and 128 (a quarter overlap or more)
    with torch.no_grad():
        out = tiled(G, x, 64, "eval", 4)
        own = [G.eval()(x[:, :, :, left:left + 64]) for left in (0, 48, 96, 128)]
    assert out.shape == x.shape
    torch.testing.assert_close(out[..., :48], own[0][..., :48])  # only the first tile covers these
    torch.testing.assert_close(out[..., 64:96], own[1][..., 16:48])  # only the second
    torch.testing.assert_close(out[..., 112:128], own[2][..., 16:32])  # only the third
    torch.testing.assert_close(out[..., 160:], own[3][..., 32:])  # only the last
    overlap = out[..., 48:64]  # the first two blend: between their outputs, not a copy of either
    low, high = torch.minimum(own[0][..., 48:], own[1][..., :16]), torch.maximum(own[0][..., 48:], own[1][..., :16])
    assert bool(((overlap >= low - 1e-6) & (overlap <= high + 1e-6)).all())
    assert not torch.allclose(overlap, own[0][..., 48:]) and not torch.allclose(overlap, own[1][..., :16])


class TileStatistics(nn.Module):
    """What batch norm in paper mode does to each tile: normalises it by its own statistics (here
    its mean), so that neighbouring tiles come out shifted against each other."""

    def forward(self, x):
        return x - x.mean(dim=(1, 2, 3), keepdim=True)


def border_jump_ratio(out: torch.Tensor, size: int) -> float:
    """Mean jump between neighbouring columns where a tile begins or ends, over the median jump."""
    jumps = (out[..., 1:] - out[..., :-1]).abs().mean(dim=(0, 1, 2))
    width = out.shape[-1]
    lefts = sorted({*range(0, width - size, size * 3 // 4), width - size})
    borders = [left - 1 for left in lefts[1:]] + [left + size - 1 for left in lefts[:-1]]
    return float(jumps[borders].mean() / jumps.median())


def test_native_tiles_show_no_seam_even_where_each_tile_is_normalised_on_its_own(monkeypatch):
    ramp = torch.linspace(-1, 1, 400).expand(1, 3, 64, 400)  # a smooth image: every jump inside is the same
    out = tiled(TileStatistics(), ramp, 64, "paper", 4)
    assert border_jump_ratio(out, 64) < 2  # the tiles' shifts blend in: no jump where a tile starts or ends
    monkeypatch.setattr(torch, "hann_window", lambda n, periodic=False, device=None: torch.ones(n, device=device))
    hard = tiled(TileStatistics(), ramp, 64, "paper", 4)  # the same tiles averaged without a window
    assert border_jump_ratio(hard, 64) > 10  # what the check catches: a seam at every tile border


@pytest.mark.parametrize("dataset,direction,label_half,label", [
    ("cars", "AtoB", "A", True),  # the mask is the input: resized nearest, ids coloured
    ("cars", "BtoA", "A", False),  # photo -> mask: the input is a photo
    ("cityscapes", "AtoB", "B", False),  # photo -> label map
    ("cityscapes", "BtoA", "B", True),  # its label maps are the B half
    ("facades", "BtoA", None, False),  # A|B images: both halves photos to the tiles
])
def test_the_model_file_says_whether_its_input_is_a_label_map(tiny_cfg, dataset, direction, label_half, label):
    import dataclasses

    cfg = dataclasses.replace(tiny_cfg, dataset=dataset, direction=direction)
    recipe = {"label_half": label_half, "palette": PALETTES["cars"].to_dict() if label_half else None, "fit": "pad"}
    described = generator_file.describe(cfg, recipe)["input"]
    assert described == {"fit": "pad", "label": label, "palette": recipe["palette"] if label else None}


def test_train_scale_generates_at_the_training_size_and_resizes_back(model_files):
    G, model = load_model(str(model_files / "generator.pt"), torch.device("cpu"))
    model = {**model, "input": {**model["input"], "label": False}}  # a photo model: bicubic
    rgb = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    out = translate_image(G, rgb, model, "eval", 4, torch.device("cpu"), "train")
    small = np.array(Image.fromarray(rgb).resize((64, 64), Image.BICUBIC))
    with torch.no_grad():
        y = G.eval()(torch.from_numpy(small).permute(2, 0, 1)[None].float() / 127.5 - 1)
    expected = ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert out.shape == rgb.shape
    assert np.array_equal(out, np.asarray(Image.fromarray(expected).resize((256, 256), Image.BICUBIC)))


def test_training_checkpoint_and_generator_file_give_the_same_model(model_files):
    a, _ = load_model(str(model_files / "generator.pt"), torch.device("cpu"))
    b, _ = load_model(str(model_files / "last.pt"), torch.device("cpu"))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_cli_translates_class_id_and_colour_masks_alike(model_files, tmp_path):
    ids = np.zeros((48, 80), np.uint8)
    ids[10:30, 10:70], ids[30:40, 15:25] = 1, 2
    (tmp_path / "in").mkdir()
    Image.fromarray(ids).save(tmp_path / "in" / "ids.png")
    Image.fromarray(PALETTES["cars"].colours[ids]).save(tmp_path / "in" / "colour.png")
    result = CliRunner().invoke(app, ["translate", str(model_files / "generator.pt"), str(tmp_path / "in"),
                                      "--out", str(tmp_path / "out"), "--mode", "eval", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    a, b = (np.asarray(Image.open(tmp_path / "out" / f"{n}.png")) for n in ("ids", "colour"))
    assert a.shape == (48, 80, 3) and np.array_equal(a, b)


def test_paper_mode_is_repeatable_by_seed_changes_with_it_and_is_not_eval_mode(model_files, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")

    def translated(run, *options):
        r = CliRunner().invoke(app, ["translate", str(model_files / "generator.pt"), str(tmp_path / "x.png"),
                                     "--out", str(tmp_path / run), "--device", "cpu", *options])
        assert r.exit_code == 0, r.output
        return np.asarray(Image.open(tmp_path / run / "x.png"))

    first, again = translated("a"), translated("b")
    assert np.array_equal(first, again)  # the same seed: the same dropout masks
    assert not np.array_equal(first, translated("c", "--seed", "1"))  # another seed: other masks
    assert not np.array_equal(first, translated("d", "--mode", "eval"))  # dropout and batch statistics matter


@pytest.mark.parametrize("fmt,load", [
    ("pt2", lambda path: torch.export.load(path).module()),
    ("torchscript", torch.jit.load),
])
def test_the_exported_generator_matches_the_eager_one_at_any_batch(model_files, tmp_path, fmt, load):
    out = tmp_path / f"g.{fmt}"
    result = CliRunner().invoke(app, ["export", str(model_files / "generator.pt"), "--out", str(out), "--format", fmt])
    assert result.exit_code == 0, result.output
    G, _ = load_model(str(model_files / "generator.pt"), torch.device("cpu"))
    exported = load(str(out))
    for batch in (1, 3):
        x = torch.rand(batch, 3, 64, 64) * 2 - 1
        with torch.no_grad():
            torch.testing.assert_close(exported(x), G.eval()(x))
        assert not exported(x).requires_grad  # an inference program: no autograd history on its outputs
    bad = CliRunner().invoke(app, ["export", str(model_files / "generator.pt"), "--out", str(tmp_path / "x"),
                                   "--format", "onnx"])
    assert bad.exit_code == 1 and "--format is 'onnx'; allowed: pt2, torchscript" in bad.output
    assert not (tmp_path / "x").exists()


def test_errors_are_one_line_and_debug_shows_the_traceback(model_files, tmp_path, monkeypatch):
    hint = "give models/generator.pt, a checkpoint, runs:/<id>/model or models:/<name>/<version>"
    missing = CliRunner().invoke(app, ["translate", str(tmp_path / "nope.pt"), str(tmp_path)])
    assert missing.exit_code == 1 and missing.output.strip().splitlines() == [
        f"error: {tmp_path / 'nope.pt'}: no such file; run `dvc repro` first to train it, or {hint}"]
    for name, content in (("notes.txt", b"not a model"), ("weights.pt", None)):  # any file, or torch's own
        if content is None:
            torch.save({"w": torch.zeros(2)}, tmp_path / name)
        else:
            (tmp_path / name).write_bytes(content)
        wrong = CliRunner().invoke(app, ["translate", str(tmp_path / name), str(tmp_path)])
        assert wrong.exit_code == 1 and wrong.output.strip().splitlines() == [
            f"error: {tmp_path / name}: not a generator file of pix2pix-dvc (or of an older version); {hint}"]
    from pix2pix import translate

    monkeypatch.setattr(translate, "translate", lambda *a: 1 / 0)
    monkeypatch.delenv("PIX2PIX_DEBUG", raising=False)
    args = ["translate", str(model_files / "generator.pt"), str(tmp_path)]
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 1 and "Traceback" not in plain.output
    assert "error: ZeroDivisionError: division by zero (run with --debug for the traceback)" in plain.output
    debug = CliRunner().invoke(app, ["--debug", *args])
    assert isinstance(debug.exception, ZeroDivisionError)


def test_every_command_has_help_with_an_example_and_help_takes_no_value():
    commands = [[c.name or c.callback.__name__] for c in app.registered_commands] + [["data", "check"]]
    assert {"params", "synth", "bench", "ui", "translate", "export", "doctor", "torchrun"} <= {c[0] for c in commands}
    for command in commands:
        result = CliRunner().invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, command
        assert re.search(r"--help\s+Show this message", result.output), result.output  # a flag, shown without a value


def test_one_bad_input_among_many_is_named_and_the_others_are_translated(model_files, tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a", "c"):
        Image.fromarray(np.zeros((40, 60), np.uint8)).save(tmp_path / "in" / f"{name}.png")
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    (tmp_path / "in" / "._a.png").write_bytes(b"macOS resource fork")  # OS litter: skipped, not an input
    result = CliRunner().invoke(app, ["translate", str(model_files / "generator.pt"), str(tmp_path / "in"),
                                      "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"error: 1 of 3 inputs were not translated ({tmp_path / 'in' / 'b.png'}: unreadable image (cannot identify "
        f"image file '{tmp_path / 'in' / 'b.png'}'); replace or remove the file); the other 2 are in {tmp_path / 'out'}")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    scale = CliRunner().invoke(app, ["translate", str(model_files / "generator.pt"), str(tmp_path / "in"),
                                     "--scale", "huge"])
    assert scale.exit_code == 1 and scale.output.strip() == "error: --scale is 'huge'; allowed: train, native"
    mode = CliRunner().invoke(app, ["translate", str(model_files / "generator.pt"), str(tmp_path / "in"),
                                    "--mode", "dream"])
    assert mode.exit_code == 1 and mode.output.strip() == "error: mode is 'dream'; allowed: paper, eval"
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(tmp_path / "in" / "c.jpg")  # c.png's output too
    clash = CliRunner().invoke(app, ["translate", str(model_files / "generator.pt"), str(tmp_path / "in")])
    assert clash.exit_code == 1 and "several inputs would be written to c.png" in clash.output


def test_doctor_reports_and_fails_on_a_blocker(tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ok = CliRunner().invoke(app, ["doctor"])
    assert ok.exit_code == 0, ok.output
    for name in ("torch", "device", "precision", "processes", "FID", "DVC", "MLflow", "mirror", "dataset"):
        assert re.search(rf"^(ok|warn)\s+{name}\b", ok.output, re.M), name
    assert re.search(r"^ok\s+precision\s+fp32 on CPU", ok.output, re.M)
    params["mlflow"]["tracking_uri"] = "http://127.0.0.1:9"  # discard port: nothing answers
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad = CliRunner().invoke(app, ["doctor"])
    assert bad.exit_code == 1 and re.search(r"^FAIL\s+MLflow\s+mlflow.tracking_uri http://127.0.0.1:9", bad.output, re.M)
    params["train"]["nproc_per_node"], params["batch_size"] = 2, 2  # two CPU processes with batch norm
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    two = CliRunner().invoke(app, ["doctor"])
    assert re.search(r"^FAIL\s+processes\s+.model.norm. is batch, which several CPU processes cannot synchronise", two.output, re.M)


def test_doctor_says_whether_a_mirror_is_set_reachable_and_holding_the_dataset(tmp_path, monkeypatch):
    import dataclasses

    from pix2pix.config import load_config
    from pix2pix.doctor import mirror_check

    cfg = load_config(ROOT / "params.yaml")  # dataset: cars
    monkeypatch.delenv("PIX2PIX_MIRROR", raising=False)
    assert mirror_check(cfg).status == "ok" and "none set" in mirror_check(cfg).detail
    monkeypatch.setenv("PIX2PIX_MIRROR", str(tmp_path / "nowhere"))
    assert mirror_check(cfg) == type(mirror_check(cfg))("mirror", "FAIL", f"{tmp_path / 'nowhere'}: not a folder; "
                                                                          "fix data.mirror or $PIX2PIX_MIRROR")
    monkeypatch.setenv("PIX2PIX_MIRROR", str(tmp_path))  # a machine's shelf without cars: the URL follows
    assert mirror_check(cfg).status == "warn" and "no cars there" in mirror_check(cfg).detail
    named = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, mirror=str(tmp_path)))  # data.mirror must hold it
    assert mirror_check(named).status == "FAIL" and "holds no cars/ or car-segmentation/" in mirror_check(named).detail
    (tmp_path / "car-segmentation").mkdir()  # the cars dataset's folder name in a mirror
    assert mirror_check(cfg).status == "ok" and mirror_check(cfg).detail.endswith("holds cars")
    assert mirror_check(named).status == "ok"