"""Built-in datasets to tiles: synthetic cars, palettes, splits, tiles, device data and jitter."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix.data import synthetic
from pix2pix.data.augment import PairJitter
from pix2pix.data.device_data import batches, load_split, place, resident
from pix2pix.data.download import fetch
from pix2pix.data.framing import fit
from pix2pix.data.palettes import PALETTES
from pix2pix.data.tiles import build_tiles, read_info, read_manifest
from pix2pix.errors import Pix2PixError

CARS = PALETTES["cars"]


def test_synthetic_samples_are_deterministic_and_varied():
    photo1, mask1 = synthetic.sample(seed=0, index=3)
    photo2, mask2 = synthetic.sample(seed=0, index=3)
    assert np.array_equal(photo1, photo2) and np.array_equal(mask1, mask2)
    other_photo, other_mask = synthetic.sample(seed=1, index=3)
    assert not np.array_equal(mask1, other_mask) or not np.array_equal(photo1, other_photo)
    positions = {tuple(np.argwhere(synthetic.sample(0, i)[1] == 1).mean(0).round()) for i in range(8)}
    assert len(positions) == 8  # cars move around


def test_synthetic_masks_hold_every_car_class():
    for index in range(5):
        photo, mask = synthetic.sample(seed=0, index=index)
        assert set(np.unique(mask)) == {0, 1, 2, 3, 4}
        assert photo.shape[:2] == mask.shape and photo.dtype == np.uint8


def test_each_class_gets_its_colour_and_an_unknown_id_is_refused_naming_the_file():
    ids = np.random.default_rng(0).integers(0, 5, size=(16, 16)).astype(np.uint8)
    colour = CARS.colour(ids)
    colours = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    for k, rgb in enumerate(colours):
        assert (colour[ids == k] == rgb).all()
    assert CARS.names == ("background", "body", "wheels", "lights", "windows")
    with pytest.raises(Pix2PixError, match=r"m.png: class id 7 is not in the palette, which covers 0..4"):
        CARS.colour(np.array([[0, 7]], dtype=np.uint8), "m.png")


@pytest.fixture
def raw_cars(tmp_path, tiny_cfg):
    """The synthetic dataset as the download stage writes it (with its SOURCE.json)."""
    return fetch(tiny_cfg, tmp_path / "raw")


def test_tiles_are_split_framed_once_and_the_label_half_holds_palette_colours_only(raw_cars, tmp_path, tiny_cfg):
    manifest = build_tiles(raw_cars, tmp_path / "tiles", tiny_cfg)
    assert set(manifest["split"]) == {"train", "val", "test"} and len(manifest) == 24
    assert read_manifest(tmp_path / "tiles")["tile"].tolist() == manifest["tile"].tolist()
    assert read_info(tmp_path / "tiles")["label_half"] == "A"
    for tile_name, split, source in zip(manifest["tile"], manifest["split"], manifest["source_b"]):
        tile = np.asarray(Image.open(tmp_path / "tiles" / tile_name))
        side = 72 if split == "train" else 64  # train at the load size: 64 x 286/256, rounded
        assert tile.shape == (side, 2 * side, 3)
        # masks resized nearest: no blended colours; photos resized once, from the source to the side
        assert {tuple(c) for c in tile[:, :side].reshape(-1, 3)} <= {tuple(c) for c in CARS.colours}
        once = fit(Image.open(raw_cars / source).convert("RGB"), side, "crop", Image.BICUBIC)
        assert np.array_equal(tile[:, side:], np.asarray(once))


def test_crop_keeps_the_centre_pad_keeps_everything_and_translate_gets_the_input_back():
    from pix2pix.data.framing import frame

    wide = np.zeros((50, 100, 3), np.uint8)
    wide[:, :25], wide[:, 25:75], wide[:, 75:] = (255, 0, 0), (0, 255, 0), (255, 0, 0)  # red | green | red
    image = Image.fromarray(wide)
    cropped = np.asarray(fit(image, 32, "crop", Image.NEAREST))
    assert cropped.shape == (32, 32, 3) and (cropped == (0, 255, 0)).all()  # the sides are dropped
    padded = np.asarray(fit(image, 32, "pad", Image.NEAREST))
    assert (padded[:8] == 0).all() and (padded[24:] == 0).all()  # black bars above and below
    assert (padded[8:24, :8] == (255, 0, 0)).all() and (padded[8:24, 12:20] == (0, 255, 0)).all()  # all of it
    for mode, shape in (("crop", (32, 64, 3)), ("pad", (32, 32, 3))):  # translate keeps the whole image
        framed = frame(image, 32, mode, Image.NEAREST)
        assert np.asarray(framed.image).shape == shape
        back = framed.restore(np.asarray(framed.image))  # an identity model: the input comes back
        assert back.shape == wide.shape and (back[:, 40:60] == (0, 255, 0)).all() and (back[:, :20] == (255, 0, 0)).all()


def test_split_is_deterministic_by_seed(raw_cars, tmp_path, tiny_cfg):
    first = build_tiles(raw_cars, tmp_path / "a", tiny_cfg)
    second = build_tiles(raw_cars, tmp_path / "b", tiny_cfg)
    assert first.equals(second)


def test_prepare_refuses_a_folder_that_is_not_the_datasets_download(raw_cars, tmp_path, tiny_cfg):
    (raw_cars / "SOURCE.json").unlink()  # say, data.path pointed at a folder of your own with dataset: synthetic
    with pytest.raises(Pix2PixError, match=r"not the download of 'synthetic'.*dataset: folder"):
        build_tiles(raw_cars, tmp_path / "tiles", tiny_cfg)


def test_load_split_gives_input_and_target_by_direction(raw_cars, tmp_path, tiny_cfg):
    build_tiles(raw_cars, tmp_path / "tiles", tiny_cfg)
    ab = load_split(tmp_path / "tiles", "train", "AtoB")
    ba = load_split(tmp_path / "tiles", "train", "BtoA", size=72)
    assert ab.dtype == torch.uint8 and ab.shape[1:] == (6, 72, 72)
    assert torch.equal(ab[:, :3], ba[:, 3:]) and torch.equal(ab[:, 3:], ba[:, :3])


def test_tiles_of_another_size_than_the_params_ask_are_refused(raw_cars, tmp_path, tiny_cfg):
    build_tiles(raw_cars, tmp_path / "tiles", tiny_cfg)  # e.g. made before augment.load_scale changed
    with pytest.raises(Pix2PixError, match=r"the train tiles are 72x72, the params ask for 80x80 .*dvc repro prepare"):
        load_split(tmp_path / "tiles", "train", "AtoB", size=80)


def test_jitter_keeps_input_and_target_aligned():
    torch.manual_seed(0)
    base = torch.randint(0, 256, (8, 3, 72, 72), dtype=torch.uint8)
    pairs = torch.cat([base, base], dim=1)  # target == input, so any misalignment shows
    out = PairJitter(64)(pairs)
    assert out.shape == (8, 6, 64, 64) and out.min() >= -1 and out.max() <= 1
    assert torch.equal(out[:, :3], out[:, 3:])


def test_jitter_varies_across_samples_and_calls():
    torch.manual_seed(0)
    one = torch.arange(72 * 72, dtype=torch.float32).reshape(1, 1, 72, 72) % 251
    pairs = one.to(torch.uint8).expand(16, 6, 72, 72).contiguous()
    jitter = PairJitter(64)
    first, second = jitter(pairs), jitter(pairs)
    distinct = {tuple(x[0, :2, :2].flatten().tolist()) for x in first}
    assert len(distinct) > 4  # different crops/flips within one batch
    assert not torch.equal(first, second)  # and across epochs


def test_every_bad_pair_is_named_in_one_message_and_nothing_is_written(raw_cars, tmp_path, tiny_cfg):
    labels, images = raw_cars / "train" / "labels", raw_cars / "train" / "images"
    first, second, third = sorted(labels.iterdir())[:3]
    ids = np.asarray(Image.open(first)).copy()
    ids[0, 0] = 9
    Image.fromarray(ids).save(first)  # an id the palette does not cover
    (images / second.name).write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # an unreadable photo
    third.unlink()  # a photo without its mask
    with pytest.raises(Pix2PixError) as caught:
        build_tiles(raw_cars, tmp_path / "tiles", tiny_cfg)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{raw_cars}: 1 image has no partner (train/images/{third.name})")
    assert f"{first.name}: class id 9 is not in the palette" in message and "2 of 23 pairs cannot be used" in message
    assert f"{second.name}: unreadable image" in message
    assert not (tmp_path / "tiles").exists() and not list(tmp_path.glob(".tiles*"))


def test_files_that_are_not_images_are_skipped_and_named(raw_cars, tmp_path, tiny_cfg, caplog):
    (raw_cars / "train" / "images" / "notes.txt").write_text("hello")
    manifest = build_tiles(raw_cars, tmp_path / "tiles", tiny_cfg)
    assert len(manifest) == 24
    assert "skipping 1 files that are not images (train/images/notes.txt)" in caplog.text


def test_an_empty_dataset_is_a_clear_error(tmp_path, tiny_cfg):
    (tmp_path / "raw" / "images").mkdir(parents=True)
    (tmp_path / "raw" / "labels").mkdir()
    (tmp_path / "raw" / "SOURCE.json").write_text('{"dataset": "synthetic"}')
    with pytest.raises(Pix2PixError, match="no pairs found in layout labels"):
        build_tiles(tmp_path / "raw", tmp_path / "tiles", tiny_cfg)


def test_a_split_stays_on_the_gpu_only_within_the_budget():
    data = torch.zeros(10, 6, 64, 64, dtype=torch.uint8)  # 240 KiB
    cuda = torch.device("cuda")
    assert resident(data, cuda, budget_gb=1) and not resident(data, cuda, budget_gb=2e-4)
    assert resident(data, torch.device("cpu"), budget_gb=0)  # host memory is where CPU training reads


def test_batches_of_a_resident_split_cover_it_once_in_the_epoch_order():
    data = torch.arange(10 * 6 * 4 * 4, dtype=torch.int64).reshape(10, 6, 4, 4).to(torch.uint8)
    device = torch.device("cpu")
    assert place(data, device, budget_gb=0).device.type == "cpu"
    order = torch.randperm(10)
    got = list(batches(data, order, 4, device))
    assert [len(b) for b in got] == [4, 4, 2]
    assert torch.equal(torch.cat(got), data[order])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned-memory path needs a CUDA device")
def test_host_held_batches_arrive_on_the_gpu_in_order():
    data = torch.randint(0, 256, (9, 6, 8, 8), dtype=torch.uint8)
    device = torch.device("cuda")
    held = place(data, device, budget_gb=0)
    assert held.device.type == "cpu" and held.is_pinned()
    order = torch.randperm(9)
    got = torch.cat(list(batches(held, order, 2, device)))
    assert got.device.type == "cuda" and torch.equal(got.cpu(), data[order])


def test_a_source_without_a_test_split_tests_on_its_val_split():
    from collections import Counter

    from pix2pix.data.pairs import Pair
    from pix2pix.data.tiles import assign_splits

    def source(**counts) -> list[Pair]:
        return [Pair(split, Path(f"{split}/{i}.png"), Path(f"{split}/{i}.jpg")) for split, n in counts.items()
                for i in range(n)]

    def split(pairs) -> Counter:
        return Counter(p.split for p in assign_splits(pairs, val_fraction=0.1, seed=0))

    assert split(source(train=20, val=5, test=6)) == {"train": 20, "val": 5, "test": 6}  # facades: as it is
    maps = assign_splits(source(train=20, val=5), val_fraction=0.1, seed=0)  # the reference tests on val
    assert [p.b for p in maps if p.split == "test"] == [Path(f"val/{i}.jpg") for i in range(5)]
    assert all(p.b.parent.name == "train" for p in maps if p.split != "test")  # val carved from train
    assert split(maps) == {"train": 18, "val": 2, "test": 5}
    assert split(source(**{"": 20})) == {"train": 16, "val": 2, "test": 2}  # no splits: both carved from train
