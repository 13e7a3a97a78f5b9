"""Your own pairs (dataset: folder): every layout people keep pairs in, files as people have them,
bad input caught in one message, `pix2pix data check`, translate fed as prepare fed training, and
the DVC path from `dvc add` to a re-run of just what an edit changes."""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from conftest import ROOT, SHARED_DATA, mirror_or_synthetic, tiny_overrides
from dvc_project import init_repo, run
from pix2pix import generator_file
from pix2pix.cli import app
from pix2pix.config import load_config
from pix2pix.data.framing import fit, frame
from pix2pix.data.images import read_label, read_rgb
from pix2pix.data.palettes import PALETTES, voc_colours
from pix2pix.data.tiles import build_tiles, read_info
from pix2pix.errors import Pix2PixError
from pix2pix.generation import apply
from pix2pix.models import build_generator
from pix2pix.translate import read_input, translate_image


def pairs(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """n (A, B) image pairs of different scenes: facades (label map, photo) from the offline mirror
    when it is there, else synthetic cars (colour mask, photo). The tests that use them are marked
    `mirror` (@mirror_or_synthetic): CI runs them both ways."""
    if SHARED_DATA.is_dir():
        tiles = [np.asarray(Image.open(SHARED_DATA / "facades" / "train" / f"{i + 1}.jpg")) for i in range(n)]
        return [(t[:, t.shape[1] // 2:], t[:, :t.shape[1] // 2]) for t in tiles]
    return [(PALETTES["cars"].colour(mask), photo) for photo, mask in (synthetic_sample(i) for i in range(n))]


def synthetic_sample(i):
    from pix2pix.data import synthetic

    return synthetic.sample(0, i)


def save(path, array, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def cfg_for(folder, **extra):
    return load_config(ROOT / "params.yaml", tiny_overrides(dataset="folder", **{"data.path": str(folder),
                                                                               "mlflow.enabled": False}, **extra))


def prepare(folder, tmp_path, **extra):
    cfg = cfg_for(folder, **extra)
    return build_tiles(folder, tmp_path / "data" / "tiles", cfg), cfg


def write_layout(root, layout, data):
    """The pairs in `layout`, with train/val/test folders where the layout spells them (every
    fourth pair val, every fourth test)."""
    for i, (a, b) in enumerate(data):
        split = ("train", "train", "val", "test")[i % 4]
        paths = {
            "ab": (f"{split}/{i}.jpg", None),
            "A/train + B/train": (f"A/{split}/{i}.png", f"B/{split}/{i}.jpg"),  # A and B in other formats
            "train_A + train_B": (f"{split}_A/{i}.png", f"{split}_B/{i}.png"),
            "input + target": (f"input/{i}.png", f"target/{i}.png"),  # no splits: carved by seed
            "images + labels": (f"labels/{split}/{i}.png", f"images/{split}/{i}.jpg"),
        }[layout]
        if paths[1] is None:
            save(root / paths[0], np.concatenate([a, b], axis=1), quality=95)
        else:
            save(root / paths[0], a)
            save(root / paths[1], b, **({"quality": 95} if paths[1].endswith(".jpg") else {}))


@mirror_or_synthetic
@pytest.mark.parametrize("layout,found,splits", [
    ("ab", "ab", {"train": 4, "val": 2, "test": 2}),
    ("A/train + B/train", "paired", {"train": 4, "val": 2, "test": 2}),
    ("train_A + train_B", "paired", {"train": 4, "val": 2, "test": 2}),
    ("input + target", "paired", {"train": 6, "val": 1, "test": 1}),  # no split folders: carved by seed
    ("images + labels", "labels", {"train": 4, "val": 2, "test": 2}),
])
def test_each_layout_pairs_its_files_and_splits_them_as_its_folders_say(tmp_path, layout, found, splits):
    own = tmp_path / "own"
    data = pairs(8)
    write_layout(own, layout, data)
    manifest, cfg = prepare(own, tmp_path)
    info = read_info(tmp_path / "data" / "tiles")
    assert info["layout"] == found and info["pairs"] == splits
    assert manifest["split"].value_counts().to_dict() == splits
    for row in manifest.itertuples():  # each tile holds its own pair's A and B, each framed once
        side = cfg.tile_size(row.split)
        tile = np.asarray(Image.open(tmp_path / "data" / "tiles" / row.tile))
        a, b = (read_rgb(own / p) for p in (row.source_a, row.source_b))
        if layout == "ab":
            a, b = a[:, :a.shape[1] // 2], b[:, b.shape[1] // 2:]
        resample_a = Image.NEAREST if found == "labels" else Image.BICUBIC
        assert np.array_equal(tile[:, :side], np.asarray(fit(Image.fromarray(a), side, "crop", resample_a)))
        assert np.array_equal(tile[:, side:], np.asarray(fit(Image.fromarray(b), side, "crop", Image.BICUBIC)))


@pytest.mark.parametrize("palette", ["cars", "ade20k", "file"])
def test_class_id_label_maps_are_coloured_by_the_palette_and_colour_maps_pass_unchanged(tmp_path, palette):
    own = tmp_path / "own"
    ids = np.zeros((48, 64), np.uint8)
    ids[:, 20:40], ids[:, 40:] = 1, 2
    photo = np.full((48, 64, 3), 90, np.uint8)
    save(own / "labels" / "train" / "ids.png", ids)
    save(own / "images" / "train" / "ids.jpg", photo)
    colour_map = np.zeros((48, 64, 3), np.uint8)
    colour_map[:, 32:] = (10, 200, 30)  # already in colour: kept as it is
    save(own / "labels" / "val" / "colour.png", colour_map)
    save(own / "images" / "val" / "colour.jpg", photo)
    save(own / "labels" / "test" / "more.png", ids)
    save(own / "images" / "test" / "more.jpg", photo)
    spec = palette
    if palette == "file":
        spec = "palette.json"  # a file in the folder: DVC tracks it with the pairs
        (own / spec).write_text(json.dumps({"sky": [0, 0, 250], "road": [128, 128, 128], "car": [250, 0, 0]}))
    manifest, cfg = prepare(own, tmp_path, **{"data.palette": spec})
    expected = {"cars": PALETTES["cars"].colours[:3], "ade20k": voc_colours(3),
                "file": np.array([[0, 0, 250], [128, 128, 128], [250, 0, 0]])}[palette]
    tiles = {Path(row.source_a).stem: np.asarray(Image.open(tmp_path / "data" / "tiles" / row.tile))
             for row in manifest.itertuples()}
    for name, source in (("ids", expected[ids]), ("colour", colour_map)):
        side = tiles[name].shape[0]
        want = fit(Image.fromarray(source.astype(np.uint8)), side, "crop", Image.NEAREST)
        assert np.array_equal(tiles[name][:, :side], np.asarray(want)), name
    assert read_info(tmp_path / "data" / "tiles")["palette"]["colours"][:3] == expected.tolist()
    if palette == "file":  # one outside the folder would change without DVC seeing it; a repeated name shifts ids
        for spec, message in (("../palette.json", "a palette file must be inside data.path"),
                              ("twice.json", "class 'sky' is named twice")):
            (own / "twice.json").write_text('{"sky": [0, 0, 250], "sky": [1, 1, 1]}')
            with pytest.raises(Pix2PixError, match=message):
                prepare(own, tmp_path / "again", **{"data.palette": spec})


@mirror_or_synthetic
def test_a_folder_of_colour_label_maps_passes_no_palette_to_the_model(tmp_path):
    own = tmp_path / "own"
    for i, (label, photo) in enumerate(pairs(4)):  # colour maps (facade labels, or coloured car masks)
        split = ("train", "train", "val", "test")[i]
        save(own / "labels" / split / f"{i}.png", label)
        save(own / "images" / split / f"{i}.png", photo)
    prepare(own, tmp_path)
    assert read_info(tmp_path / "data" / "tiles")["palette"] is None  # cars' colours did not colour anything


def test_files_as_people_have_them_are_read_as_a_viewer_shows_them(tmp_path):
    """Grey, palette, RGBA, 16-bit PNG and TIFF (scaled, not clipped), EXIF-rotated JPEG."""
    grey = save(tmp_path / "grey.png", np.arange(256, dtype=np.uint8).reshape(16, 16))
    assert (read_rgb(grey)[..., 0] == np.arange(256).reshape(16, 16)).all() and read_rgb(grey).shape == (16, 16, 3)
    paletted = Image.new("P", (4, 4))
    paletted.putpalette([0, 0, 0, 250, 10, 20] + [0] * 762)
    paletted.putpixel((1, 1), 1)
    paletted.save(tmp_path / "p.png")
    assert tuple(read_rgb(tmp_path / "p.png")[1, 1]) == (250, 10, 20)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3], rgba[0, 0, 3], rgba[1, 1, 3] = 40, 255, 128  # opaque, half, and transparent pixels
    rgb = read_rgb(save(tmp_path / "rgba.png", rgba))
    assert tuple(rgb[0, 0]) == (40, 40, 40) and tuple(rgb[3, 3]) == (255, 255, 255)  # composited on white
    assert 140 < rgb[1, 1, 0] < 155
    wide = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    for name in ("wide.png", "wide.tif"):
        Image.fromarray(wide).save(tmp_path / name)
        assert Image.open(tmp_path / name).mode.startswith("I;16")
        assert read_rgb(tmp_path / name)[0, :, 0].tolist() == [0, 1, 128, 255]  # 32896 is mid-grey, not white
        Image.fromarray(np.array([[0, 1, 2, 4]], dtype=np.uint16)).save(tmp_path / f"ids-{name}")
        assert read_label(tmp_path / f"ids-{name}").tolist() == [[0, 1, 2, 4]]  # class ids are not grey levels
        with pytest.raises(Pix2PixError, match=f"{name}: class ids up to 65535; at most 255"):
            read_label(tmp_path / name)
    bits = Image.new("1", (4, 1))
    bits.putpixel((2, 0), 1)
    bits.save(tmp_path / "bits.png")
    assert read_label(tmp_path / "bits.png").tolist() == [[0, 0, 1, 0]]  # a 1-bit mask: ids 0 and 1
    grey = np.zeros((2, 2, 3), np.uint8)
    grey[0, 0] = 255  # black and white in RGB: the colours of background and windows, not ids
    assert read_label(save(tmp_path / "bw.png", grey), classes=5).shape == (2, 2, 3)
    grey[0, 0] = 3  # R = G = B below the palette's size: the car-segmentation masks' class ids
    assert read_label(save(tmp_path / "ids.png", grey), classes=5).tolist() == [[3, 0], [0, 0]]
    landscape = np.zeros((20, 40, 3), np.uint8)
    landscape[:, :10] = 255  # a white band on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    Image.fromarray(landscape).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    shown = read_rgb(tmp_path / "turned.jpg")
    assert shown.shape == (40, 20, 3) and shown[:10].mean() > 200 and shown[-10:].mean() < 50  # the band on top


@mirror_or_synthetic
def test_pairs_of_other_sizes_and_shapes_are_framed_and_os_litter_is_ignored(tmp_path):
    own = tmp_path / "own"
    (a, b), = pairs(1)
    wide_a = np.asarray(Image.fromarray(a).resize((120, 80)))
    wide_b = np.asarray(Image.fromarray(b).resize((60, 40)))  # the same view, half the size
    for split in ("train", "train2", "val", "test"):
        save(own / "A" / split.rstrip("2") / f"{split}.png", wide_a)
        save(own / "B" / split.rstrip("2") / f"{split}.png", wide_b)
    for litter in (".DS_Store", "A/Thumbs.db", "__MACOSX/A/train/._train.png", "B/train/.hidden.png", "desktop.ini"):
        (own / litter).parent.mkdir(parents=True, exist_ok=True)
        (own / litter).write_bytes(b"\0\1 not an image")
    for mode in ("crop", "pad"):
        manifest, cfg = prepare(own, tmp_path / mode, **{"data.fit": mode})
        assert len(manifest) == 4
        row = manifest[manifest["split"] == "test"].iloc[0]
        tile = np.asarray(Image.open(tmp_path / mode / "data" / "tiles" / row["tile"]))
        assert tile.shape == (64, 128, 3)
        assert np.array_equal(tile[:, 64:], np.asarray(fit(Image.fromarray(wide_b), 64, mode, Image.BICUBIC)))


def bad_input(own, case):
    data = pairs(4)
    write_layout(own, "A/train + B/train", data)
    if case == "no partner":
        for name in ("B/train/0.jpg", "B/train/1.jpg"):
            (own / name).unlink()
        return r"2 images have no partner \(A/train/0.png, A/train/1.png\)"
    if case == "aspect":
        save(own / "B/val/2.jpg", np.zeros((20, 80, 3), np.uint8))
        return r"A/val/2.png is \d+x\d+ but 2.jpg is 80x20: aspect ratios [\d.]+ and 4.00 differ"
    if case == "unreadable":
        (own / "A/test/3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        return r"3.png: unreadable image"
    if case == "doubles":
        save(own / "A/train/0.jpg", data[0][0])  # beside A/train/0.png: which is the input?
        return r"1 images share a name with another on their side \(A/train/0.png\): keep one of each"
    if case == "no val":  # two train pairs are too few to carve a val split from
        for side in ("A", "B"):
            for path in (own / side / "val").iterdir():
                path.unlink()
        return r"no val pairs: give it a folder or more pairs, or raise data.val_fraction; mend these and run again"
    if case == "no pairs":
        for path in sorted(own.rglob("*.*")):
            path.unlink()
        (own / "notes.txt").write_text("pairs to come")
        return r"no pairs found in layout ab \(looked for A\|B side-by-side images, A/ \+ B/"
    if case == "wrong level":
        return r"own/A: this is one side of a pair of folders; set data.path to the folder that holds A/"
    if case == "class id":
        (own / "A").rename(own / "labels")
        (own / "B").rename(own / "images")
        save(own / "labels/train/1.png", np.full(data[1][0].shape[:2], 9, np.uint8))
        return r"1.png: class id 9 is not in the palette, which covers 0..4; give data.palette a palette"
    raise AssertionError(case)


@mirror_or_synthetic
@pytest.mark.parametrize("case", ["no partner", "aspect", "unreadable", "no pairs", "wrong level", "class id",
                                  "doubles", "no val"])
def test_bad_input_is_one_line_naming_the_files_and_leaves_nothing_in_data(tmp_path, case):
    own = tmp_path / "own"
    message = bad_input(own, case)
    with pytest.raises(Pix2PixError) as caught:
        prepare(own / "A" if case == "wrong level" else own, tmp_path)
    assert "\n" not in str(caught.value)
    assert re.search(message, str(caught.value)), str(caught.value)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


@mirror_or_synthetic
def test_data_check_shows_the_layout_splits_formats_problems_and_a_preview(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "own"
    write_layout(own, "train_A + train_B", pairs(6))
    (own / "notes.txt").write_text("where these came from")
    good = CliRunner().invoke(app, ["data", "check", str(own), "--size", "64", "--preview", "look.png"])
    assert good.exit_code == 0, good.output
    lines = good.stdout.splitlines()
    assert lines[0] == f"{own}: layout paired, 6 pairs (test 1, train 4, val 1)"
    for line, side in zip(lines[1:3], "AB"):  # sizes and modes, counted: every file of the side
        assert line.startswith(f"{side}: ") and sum(map(int, re.findall(r"\((\d+)\)", line))) == 6
    assert "not images, skipped: 1 (notes.txt)" in good.output and "problems: none" in good.output
    preview = Image.open(tmp_path / "look.png")
    assert preview.size == (128, 28 + 4 * 64)  # A | B at 64 px, the first 4 pairs under a header
    (own / "train_B" / "0.png").unlink()
    bad = CliRunner().invoke(app, ["data", "check", str(own), "--size", "64"])
    assert bad.exit_code == 1
    assert "problems: " + str(own) + ": 1 image has no partner (train_A/0.png)" in bad.output
    assert bad.output.strip().endswith("prepare would refuse this folder (problems above)")


@mirror_or_synthetic
def test_doctor_gives_the_folders_verdict_from_its_headers(tmp_path, monkeypatch):
    from pix2pix.doctor import dataset_check

    own = tmp_path / "own"
    write_layout(own, "input + target", pairs(5))
    cfg = cfg_for("own")
    check = dataset_check(cfg, tmp_path)
    assert check.status == "ok" and check.detail.startswith("own: layout paired, 5 pairs")
    save(own / "target" / "2.png", np.zeros((10, 90, 3), np.uint8))
    check = dataset_check(cfg, tmp_path)
    assert check.status == "FAIL" and "aspect ratios" in check.detail and "pix2pix data check own" in check.detail


def test_translate_feeds_a_padded_label_model_exactly_what_prepare_made(tmp_path):
    """A model trained with data.fit: pad on class-id label maps: translate pads, colours the ids with
    the model's palette and resizes nearest, as prepare did, and crops the padding off the output."""
    own = tmp_path / "own"
    for i in range(4):
        photo, mask = synthetic_sample(i)
        save(own / "labels" / f"{i}.png", mask)  # class ids, 0-4
        save(own / "images" / f"{i}.png", photo)
    manifest, cfg = prepare(own, tmp_path, **{"data.fit": "pad"})
    model_file = tmp_path / "generator.pt"
    generator_file.save(build_generator(cfg), 1, generator_file.describe(cfg, read_info(tmp_path / "data/tiles")),
                        model_file)
    G, model = generator_file.load(model_file)
    assert model["input"] == {"fit": "pad", "label": True, "palette": PALETTES["cars"].to_dict()}
    row = manifest[manifest["split"] == "test"].iloc[0]
    tile = np.asarray(Image.open(tmp_path / "data/tiles" / row["tile"]))
    source = own / row["source_a"]
    label = read_input(source, model)  # the raw class-id map, coloured by the model's palette
    framed = frame(Image.fromarray(label), 64, "pad", Image.NEAREST)
    assert np.array_equal(np.asarray(framed.image), tile[:, :64])  # what the model sees = prepare's tile
    ours = translate_image(G, label, model, "eval", 4, torch.device("cpu"))
    x = torch.from_numpy(tile[:, :64].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    expected = framed.restore(((apply(G, x, "eval")[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    assert ours.shape == (*Image.open(source).size[::-1], 3) and np.array_equal(ours, expected)


@mirror_or_synthetic
@pytest.mark.slow
def test_your_folder_through_dvc_add_repro_and_an_edit_that_re_runs_just_prepare_on(tmp_path):
    """The README's path: dvc add your folder, train on it, edit one file: `dvc status` names prepare
    and what follows it, and `dvc repro` re-runs only those."""
    env = init_repo(tmp_path, tiny_overrides(fid=True, dataset="folder", epochs=1, **{"data.path": "data/own",
                                                                                      "optim.decay_share": 0.0}))
    write_layout(tmp_path / "data" / "own", "A/train + B/train", pairs(12))
    run(["dvc", "add", "data/own"], tmp_path, env)
    run(["git", "add", "-A"], tmp_path, env)
    run(["git", "commit", "-qm", "my pairs"], tmp_path, env)
    first = subprocess.run(["dvc", "repro"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "the val split has 3 images, fewer than 50: its FID is too noisy to rank runs" in first.stderr
    evaluation = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert evaluation["test_FID_too_few_images"] is True and evaluation["test_KID_std"] > 0
    assert json.loads((tmp_path / "data/raw/SOURCE.json").read_text())["dataset"] == "folder"
    run(["git", "add", "-A"], tmp_path, env)
    run(["git", "commit", "-qm", "trained on my pairs"], tmp_path, env)
    edited = tmp_path / "data/own/B/train/0.jpg"
    save(edited, np.asarray(Image.open(edited))[:, ::-1].copy(), quality=95)  # one photo mirrored
    changed = yaml.safe_load(run(["dvc", "status", "--json"], tmp_path, env))
    assert set(changed) == {"data/own.dvc", "prepare"}  # what changed; train and evaluate follow prepare's new tiles
    run(["dvc", "add", "data/own"], tmp_path, env)  # record the new version of the folder
    again = run(["dvc", "repro"], tmp_path, env)
    assert "Running stage 'prepare'" in again and "Running stage 'train'" in again
    assert "Running stage 'download'" not in again and "Running stage 'check_params'" not in again
    assert "up to date" in run(["dvc", "status"], tmp_path, env)
    assert "metrics/eval.json" in run(["dvc", "metrics", "diff"], tmp_path, env)
