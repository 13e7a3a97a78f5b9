"""Procedural cars: class-id masks and matching rendered photos, deterministic by seed.

An offline stand-in for the car-segmentation dataset (same class ids, same folder layout), used
by tests and by `dataset: synthetic`. Each sample depends only on (seed, index).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from pix2pix.files import atomic_dir

BACKGROUND, BODY, WHEELS, LIGHTS, WINDOWS = range(5)
SIZES = ((256, 192), (240, 180), (288, 216), (224, 224))  # (w, h): varied, like real photos


def car_mask(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A side view of a car as an (H, W) uint8 class-id map."""
    mask = Image.new("L", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(mask)
    length = rng.uniform(0.55, 0.85) * width
    x0 = rng.uniform(0.03 * width, width - length - 0.03 * width)
    ground = rng.uniform(0.72, 0.9) * height
    radius = rng.uniform(0.09, 0.12) * length
    body_top = ground - radius - rng.uniform(0.14, 0.22) * length
    body_bottom = ground - 0.35 * radius
    draw.rounded_rectangle([x0, body_top, x0 + length, body_bottom], radius=0.25 * (body_bottom - body_top), fill=BODY)
    # cabin: a trapezoid on the body, windows inset in it, split by a pillar
    cab_h = rng.uniform(0.11, 0.17) * length
    left, right = x0 + rng.uniform(0.18, 0.3) * length, x0 + rng.uniform(0.68, 0.8) * length
    slope = rng.uniform(0.08, 0.16) * length
    draw.polygon([(left, body_top), (right, body_top), (right - slope, body_top - cab_h), (left + slope, body_top - cab_h)], fill=BODY)
    inset, pillar = 0.18 * cab_h, left + rng.uniform(0.45, 0.6) * (right - left)
    top, bottom = body_top - cab_h + inset, body_top - 0.1 * cab_h
    draw.polygon([(left + slope + inset, top), (pillar - inset / 2, top), (pillar - inset / 2, bottom), (left + inset, bottom)], fill=WINDOWS)
    draw.polygon([(pillar + inset / 2, top), (right - slope - inset, top), (right - inset, bottom), (pillar + inset / 2, bottom)], fill=WINDOWS)
    # lights at both ends of the body, wheels over the body's lower edge
    light_y, light_h, light_w = body_top + 0.2 * (body_bottom - body_top), 0.2 * (body_bottom - body_top), 0.04 * length
    draw.rectangle([x0 + 1, light_y, x0 + 1 + light_w, light_y + light_h], fill=LIGHTS)
    draw.rectangle([x0 + length - 1 - light_w, light_y, x0 + length - 1, light_y + light_h], fill=LIGHTS)
    for cx in (x0 + rng.uniform(0.16, 0.24) * length, x0 + rng.uniform(0.76, 0.84) * length):
        draw.ellipse([cx - radius, ground - 2 * radius, cx + radius, ground], fill=WHEELS)
    out = np.asarray(mask)
    return out[:, ::-1].copy() if rng.random() < 0.5 else out


def render_photo(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Paint a plausible photo for `mask`: sky and road, shaded body, dark tyres, glass, lamps."""
    h, w = mask.shape
    ys = np.linspace(0, 1, h)[:, None, None]
    sky = np.array(rng.uniform([90, 140, 190], [160, 200, 250]))
    road = np.array(rng.uniform([70, 70, 70], [130, 125, 120]))
    horizon = rng.uniform(0.45, 0.65)
    photo = np.where(ys < horizon, sky * (0.8 + 0.2 * ys / horizon), road * (0.9 + 0.1 * ys))
    photo = np.broadcast_to(photo, (h, w, 3)).copy()
    rows = np.nonzero(mask)[0]
    top, bottom = (rows.min(), rows.max()) if rows.size else (0, h)
    shade = 1.15 - 0.45 * np.clip((np.arange(h) - top) / max(bottom - top, 1), 0, 1)[:, None, None]
    colours = {
        BODY: rng.uniform(20, 235, size=3) * shade,
        WHEELS: np.full(3, rng.uniform(20, 45)) * np.ones_like(shade),
        WINDOWS: np.array(rng.uniform([40, 60, 80], [110, 130, 160])) * (1.3 - 0.5 * shade + 0.25),
        LIGHTS: np.array(rng.uniform([220, 200, 120], [255, 245, 200])) * np.ones_like(shade),
    }
    for cls, colour in colours.items():
        layer = np.broadcast_to(colour, (h, w, 3))
        photo[mask == cls] = layer[mask == cls]
    photo += rng.normal(0, 4, size=photo.shape)
    img = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(0.6)))


def sample(seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(photo (H, W, 3) uint8, mask (H, W) uint8) for one index; independent of other indices."""
    rng = np.random.default_rng([seed, index])
    width, height = SIZES[rng.integers(len(SIZES))]
    mask = car_mask(rng, width, height)
    return render_photo(rng, mask), mask


def write_pairs(folder: Path, count: int, seed: int, test_fraction: float = 0.15) -> None:
    """Write folder/{train,test}/{images,labels}/NNNNN.png, the layout of the car-segmentation mirror."""
    n_test = max(1, round(count * test_fraction))
    for index in tqdm(range(count), desc="synthetic cars", unit="pair"):
        split = "test" if index < n_test else "train"
        photo, mask = sample(seed, index)
        for sub, array in (("images", photo), ("labels", mask)):
            path = folder / split / sub / f"{index:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)


def write_dataset(out_dir: str | Path, count: int, seed: int) -> None:
    """write_pairs into a new folder `out_dir`, whole or not at all."""
    with atomic_dir(out_dir) as tmp:
        write_pairs(tmp, count, seed)
