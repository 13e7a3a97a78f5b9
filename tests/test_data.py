from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix.data import synthetic
from pix2pix.data.augment import PairJitter
from pix2pix.data.device_data import batches, load_split, place, resident
from pix2pix.data.masks import PALETTE, colorize
from pix2pix.data.pairs import discover_mask_pairs
from pix2pix.data.tiles import build_tiles, fit, read_manifest
from pix2pix.errors import Pix2PixError


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


def test_each_class_gets_its_colour():
    ids = np.random.default_rng(0).integers(0, 5, size=(16, 16)).astype(np.uint8)
    color = colorize(ids)
    colours = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]  # background, body, wheels, lights, windows
    for k, rgb in enumerate(colours):
        assert (color[ids == k] == rgb).all()
    assert [tuple(c) for c in PALETTE] == colours


def test_unknown_class_id_is_refused_naming_the_file():
    with pytest.raises(Pix2PixError, match="m.png: unknown class id 7"):
        colorize(np.array([[0, 7]], dtype=np.uint8), "m.png")


@pytest.fixture
def raw_cars(tmp_path):
    synthetic.write_dataset(tmp_path / "raw", count=12, seed=0)
    return tmp_path / "raw"


def test_build_tiles_splits_and_mask_half_uses_only_palette(raw_cars, tmp_path, tiny_cfg):
    manifest = build_tiles(raw_cars, tmp_path / "tiles", tiny_cfg)
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert len(manifest) == 12
    assert read_manifest(tmp_path / "tiles")["tile"].tolist() == manifest["tile"].tolist()
    for name, split in zip(manifest["tile"], manifest["split"]):
        tile = np.asarray(Image.open(tmp_path / "tiles" / name))
        side = 72 if split == "train" else 64  # train at the load size: 64 x 286/256, rounded
        assert tile.shape == (side, 2 * side, 3)
        colours = {tuple(c) for c in tile[:, :side].reshape(-1, 3)}
        assert colours <= {tuple(c) for c in PALETTE}


def test_each_tile_is_its_source_resized_once(raw_cars, tmp_path, tiny_cfg):
    """Train tiles at the load size, so that the jitter only crops: no source -> 64 -> 72 resize."""
    manifest = build_tiles(raw_cars, tmp_path / "tiles", tiny_cfg)
    for split, side in (("train", 72), ("test", 64)):
        row = manifest[manifest["split"] == split].iloc[0]
        photo = np.asarray(Image.open(tmp_path / "tiles" / row["tile"]))[:, side:]
        once = fit(Image.open(raw_cars / row["source_b"]).convert("RGB"), side, "crop", Image.BICUBIC)
        assert np.array_equal(photo, np.asarray(once)), split


def test_split_is_deterministic_by_seed(raw_cars, tmp_path, tiny_cfg):
    first = build_tiles(raw_cars, tmp_path / "a", tiny_cfg)
    second = build_tiles(raw_cars, tmp_path / "b", tiny_cfg)
    assert first.equals(second)


def test_missing_mask_is_a_clear_error(raw_cars):
    next((raw_cars / "train" / "labels").iterdir()).unlink()
    with pytest.raises(Pix2PixError, match="no mask with the same name"):
        discover_mask_pairs(raw_cars)


def test_size_mismatch_fails_and_leaves_no_tiles(raw_cars, tmp_path, tiny_cfg):
    mask = next((raw_cars / "train" / "labels").iterdir())
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    with pytest.raises(Pix2PixError, match="must be the same size"):
        build_tiles(raw_cars, tmp_path / "tiles", tiny_cfg)
    assert not (tmp_path / "tiles").exists()
    assert not list(tmp_path.glob(".tiles*"))


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


def test_unknown_class_id_in_a_mask_fails_prepare_without_output(raw_cars, tmp_path, tiny_cfg):
    mask = next((raw_cars / "train" / "labels").iterdir())
    ids = np.asarray(Image.open(mask)).copy()
    ids[0, 0] = 9
    Image.fromarray(ids).save(mask)
    with pytest.raises(Pix2PixError, match=f"{mask.name}: unknown class id 9"):
        build_tiles(raw_cars, tmp_path / "tiles", tiny_cfg)
    assert not (tmp_path / "tiles").exists()


def test_non_image_file_among_images_is_named(raw_cars):
    (raw_cars / "train" / "images" / "notes.txt").write_text("hello")
    with pytest.raises(Pix2PixError, match="notes.txt: not an image file"):
        discover_mask_pairs(raw_cars)


def test_unreadable_image_is_named(raw_cars, tmp_path, tiny_cfg):
    image = next((raw_cars / "train" / "images").iterdir())
    image.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(Pix2PixError, match=f"{image.name}: unreadable image"):
        build_tiles(raw_cars, tmp_path / "tiles", tiny_cfg)


def test_empty_dataset_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(Pix2PixError, match="no image/mask pairs found"):
        discover_mask_pairs(tmp_path)


def test_masks_are_resized_nearest_never_blending_colours(tmp_path, tiny_cfg):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    ids = np.random.default_rng(0).integers(0, 5, size=(75, 100)).astype(np.uint8)
    Image.fromarray(ids).save(tmp_path / "labels" / "a.png")
    Image.fromarray(np.zeros((75, 100, 3), np.uint8)).save(tmp_path / "images" / "a.jpg")
    from pix2pix.data.pairs import Pair
    from pix2pix.data.tiles import mask_pair_tile

    for mode in ("crop", "pad"):
        tile = mask_pair_tile(Pair("train", tmp_path / "images" / "a.jpg", tmp_path / "labels" / "a.png"), 64, mode)
        assert {tuple(c) for c in tile[:, :tile.shape[0]].reshape(-1, 3)} <= {tuple(c) for c in PALETTE}


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
        return [Pair(split, Path(f"{split}/{i}.jpg"), Path(f"{split}/{i}.png")) for split, n in counts.items()
                for i in range(n)]

    def split(pairs) -> Counter:
        return Counter(p.split for p in assign_splits(pairs, val_fraction=0.1, seed=0))

    assert split(source(train=20, val=5, test=6)) == {"train": 20, "val": 5, "test": 6}  # facades: as it is
    maps = assign_splits(source(train=20, val=5), val_fraction=0.1, seed=0)  # the reference tests on val
    assert [p.image for p in maps if p.split == "test"] == [Path(f"val/{i}.jpg") for i in range(5)]
    assert all(p.image.parent.name == "train" for p in maps if p.split != "test")  # val carved from train
    assert split(maps) == {"train": 18, "val": 2, "test": 5}
    assert split(source(**{"": 20})) == {"train": 16, "val": 2, "test": 2}  # no splits: both carved from train
