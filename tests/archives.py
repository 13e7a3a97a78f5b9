"""Archives laid out as the real datasets' are, built in memory for tests; mirror folders; hostile files."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

from PIL import Image

from conftest import SHARED_DATA

ROAD, CAR = (128, 64, 128), (0, 0, 142)  # two cityscapes label colours
ADE_SCENES = {"ADE_train_00000001": "street", "ADE_train_00000002": "bathroom",
              "ADE_train_00000003": "mountain", "ADE_train_00000004": "highway",
              "ADE_val_00000001": "coast", "ADE_val_00000002": "kitchen"}
ADE_OUTDOOR = {"ADE_train_00000001", "ADE_train_00000003", "ADE_train_00000004", "ADE_val_00000001"}


# Entries are (name, data) pairs (or a {name: data} dict); data is the bytes of a regular file, or
# (tarfile.SYMTYPE / LNKTYPE / FIFOTYPE / CHRTYPE, link target) for a link or special file.


def _pairs(entries):
    return entries.items() if isinstance(entries, dict) else entries


def tar_bytes(files) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in _pairs(files):
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                (info.type, info.linkname), data = data, b""
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(entries) -> bytes:
    """A symlink is stored as zip stores one: its unix mode in external_attr, its target as the data."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in _pairs(entries):
            if isinstance(data, tuple):
                kind, data = data
                assert kind == tarfile.SYMTYPE, "zip has no hard links or special files"
                info = zipfile.ZipInfo(info)
                info.external_attr = 0o120777 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def png(width, height, colour=(200, 100, 50)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def label_png(width, height, colours) -> bytes:
    """A label image: vertical stripes of the given colours (or grey class ids)."""
    mode = "RGB" if isinstance(colours[0], tuple) else "L"
    img = Image.new(mode, (width, height))
    stripe = width // len(colours)
    for i, c in enumerate(colours):
        img.paste(c, (i * stripe, 0, (i + 1) * stripe, height))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def small_facades() -> dict:
    """{path: bytes} of 3 facades per split: real files from the mirror when it is there."""
    if SHARED_DATA.is_dir():
        src = SHARED_DATA / "facades"
        return {f"facades/{split}/{i}.jpg": (src / split / f"{i}.jpg").read_bytes() for split in ("train", "val", "test") for i in (1, 2, 3)}
    return {f"facades/{split}/{i}.jpg": png(512, 256, (i * 40, 90, 30)) for split in ("train", "val", "test") for i in (1, 2, 3)}


def car_zip_entries(count: int = 6) -> list:
    """A car-segmentation.zip in an images/ + masks/ layout: real pairs from the mirror if present."""
    if SHARED_DATA.is_dir():
        folder = SHARED_DATA / "car-segmentation" / "dataset" / "test"
        images = sorted((folder / "images").iterdir(), key=lambda p: p.stat().st_size)[:count]
        return [(f"car-segmentation/images/{p.name}", p.read_bytes()) for p in images] + [
            (f"car-segmentation/masks/{p.name}", (folder / "labels" / p.name).read_bytes()) for p in images]
    files = [(f"car-segmentation/images/car{i}.jpg", png(40, 30)) for i in range(count)]
    return files + [(f"car-segmentation/masks/car{i}.png", label_png(40, 30, [0, 1, 2, 3, 4])) for i in range(count)]


def write_cityscapes_zips(folder: Path) -> None:
    """gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip: train 3, val 2, test 1 (dummy labels)."""
    gt, left = [], []
    for split, city, n in (("train", "aachen", 3), ("val", "lindau", 2), ("test", "berlin", 1)):
        for i in range(n):
            stem = f"{city}_{i:06d}_000019"
            left.append((f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png", png(64, 32)))
            gt.append((f"gtFine/{split}/{city}/{stem}_gtFine_color.png", label_png(64, 32, [ROAD, CAR])))
            gt.append((f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png", label_png(64, 32, [7, 26])))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gtFine_trainvaltest.zip").write_bytes(zip_bytes(gt))
    (folder / "leftImg8bit_trainvaltest.zip").write_bytes(zip_bytes(left))


def ade20k_zip() -> bytes:
    """ADEChallengeData2016.zip: images/ and annotations/ by split, and sceneCategories.txt."""
    root = "ADEChallengeData2016"
    files = [(f"{root}/sceneCategories.txt", "\n".join(f"{k} {v}" for k, v in ADE_SCENES.items()).encode())]
    for stem in ADE_SCENES:
        split = "training" if "train" in stem else "validation"
        files.append((f"{root}/images/{split}/{stem}.jpg", png(48, 40)))
        files.append((f"{root}/annotations/{split}/{stem}.png", label_png(48, 40, [0, 13, 150])))
    return zip_bytes(files)


def write_mirror(folder: Path, files: dict) -> None:
    """`files` {"<dataset>/<path>": bytes} written under `folder` as the offline mirror holds them: each
    dataset's folder with its own SHA256SUMS (sha256sum format, paths inside that folder)."""
    sums: dict[str, list[str]] = {}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        dataset, inside = name.split("/", 1)
        sums.setdefault(dataset, []).append(f"{hashlib.sha256(data).hexdigest()}  {inside}\n")
    for dataset, lines in sums.items():
        (folder / dataset / "SHA256SUMS").write_text("".join(lines))


class RunsCode:
    """Pickled (torch.save(..., pickle_module=pickle)), it runs `touch <marker>` when unpickled: a hostile
    file's payload. A loader that refuses it leaves `marker` absent."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
