"""Apply a trained generator to a user's own images (`pix2pix translate`) and export it (`pix2pix export`).

Any size and aspect ratio, at one of two scales:

- train (default): a model sees the world at the scale it was trained on, so the image is resized
  as the training tiles were (shorter side to the training size), generated in squares of the
  training size (one for a square image; overlapping and blended along the longer side), and the
  output resized back to the input's size.
- native: the image at its own resolution: whole (padded to a multiple of the size the U-Net
  halves down to 1 pixel, then cropped back) when it has at most `max_pixels`, else in overlapping
  tiles of the training size blended with a smooth window, so no seams show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from tqdm import tqdm

from pix2pix import generator_file
from pix2pix.data.device_data import to_uint8, to_unit
from pix2pix.data.masks import PALETTE, colorize
from pix2pix.data.pairs import IMAGE_EXTS, read_rgb
from pix2pix.data.sources import DATASETS
from pix2pix.errors import Pix2PixError
from pix2pix.evaluation import apply
from pix2pix.files import atomic_path
from pix2pix.tracking import project_tracking_uri

SCALES = ("train", "native")
MAX_PIXELS = 4_000_000  # native scale: larger images are tiled (a whole pass needs ~1 GB per megapixel at ngf 64)


def load_model(source: str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """(G, {"image_size", "dataset", "direction"}) from models/generator*.pt, a training checkpoint
    (checkpoints/last.pt or best.pt) or an MLflow run's copy of the generator file (runs:/<id>/model)."""
    G, bundle = generator_file.load(source if not source.startswith("runs:/") else run_file(source), device)
    return G, {k: bundle[k] for k in ("image_size", "dataset", "direction")}


# The tile half (A left, B right) that holds a label map, per dataset layout, as data/tiles.py builds
# them: that half was resized nearest (no blended colours), the other bicubic.
LABEL_HALF = {"masks": "AtoB", "ade20k": "AtoB", "cityscapes": "BtoA"}  # the direction whose input is that half


def input_resample(dataset: str, direction: str):
    """How the model's inputs were resized in training: nearest for label maps, else bicubic."""
    return Image.NEAREST if LABEL_HALF.get(DATASETS[dataset].layout) == direction else Image.BICUBIC


def run_file(source: str) -> Path:
    """The generator file an MLflow run holds under `model/`, fetched to a local folder."""
    import mlflow  # slow to import: only for runs:/ sources

    mlflow.set_tracking_uri(project_tracking_uri())  # the project's store, as `pix2pix ui` shows it

    try:
        folder = mlflow.artifacts.download_artifacts(artifact_uri=source)
    except Exception as err:
        raise Pix2PixError(f"{source}: cannot fetch the run's model ({type(err).__name__}: {str(err)[:200]}); "
                           "check the run id and MLFLOW_TRACKING_URI") from None
    saved = sorted(Path(folder).glob("*.pt"))  # the run's models/generator.pt (reporting.Reporter.finish)
    if not saved:
        raise Pix2PixError(f"{source}: the run holds no generator file; give another run or a file")
    return saved[0]


def read_input(path: Path, dataset: str) -> np.ndarray:
    """(H, W, 3) uint8 input. For cars a class-id mask (grey, ids 0-4) becomes the colour mask the
    model was trained on; a colour mask passes as it is."""
    rgb = read_rgb(path)
    if DATASETS[dataset].layout == "masks":
        grey = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
        if grey and rgb.max() < len(PALETTE):
            return colorize(rgb[..., 0], str(path))
    return rgb


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    mode = "reflect" if ph < h and pw < w else "replicate"  # reflect cannot pad more than the image
    return F.pad(x, (0, pw, 0, ph), mode=mode) if ph or pw else x


def tiled(G: torch.nn.Module, x: torch.Tensor, size: int, mode: str, batch_size: int, seed: int = 0) -> torch.Tensor:
    """Overlapping size x size tiles (a quarter overlap or more), blended with a Hann window."""
    if min(x.shape[-2:]) < size:
        x = pad_to_multiple(x, size)
    _, _, h, w = x.shape
    stride = size * 3 // 4

    def starts(n: int) -> list[int]:
        return sorted({*range(0, n - size, stride), n - size})

    boxes = [(top, left) for top in starts(h) for left in starts(w)]
    window = torch.hann_window(size, periodic=False, device=x.device) + 1e-3
    weight = (window[:, None] * window[None, :])[None, None]
    out, total = torch.zeros_like(x), torch.zeros_like(x[:, :1])
    tiles = torch.cat([x[:, :, t:t + size, l:l + size] for t, l in boxes])
    for (t, l), y in zip(boxes, apply(G, tiles, mode, batch_size, seed)):
        out[:, :, t:t + size, l:l + size] += y * weight[0]
        total[:, :, t:t + size, l:l + size] += weight[0]
    return out / total


def translate_image(G: torch.nn.Module, rgb: np.ndarray, size: int, mode: str, batch_size: int, device: torch.device,
                    scale: str = "train", resample=Image.BICUBIC, max_pixels: int = MAX_PIXELS,
                    seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 in, (H, W, 3) uint8 out. `resample` resizes the input at train scale: NEAREST
    for label maps and masks (as prepare does), so that no blended colours appear. `seed` seeds
    paper mode's dropout: an image's output does not depend on the other images translated."""
    h, w = rgb.shape[:2]
    if scale == "train":
        k = size / min(h, w)
        rgb = np.asarray(Image.fromarray(rgb).resize((max(size, round(w * k)), max(size, round(h * k))), resample))
    x = to_unit(torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].to(device))  # a copy: PIL's arrays are read-only
    xh, xw = x.shape[-2:]
    if scale == "native" and xh * xw <= max_pixels:
        y = apply(G, pad_to_multiple(x, size), mode, batch_size, seed)[:, :, :xh, :xw]
    else:
        y = tiled(G, x, size, mode, batch_size, seed)[:, :, :xh, :xw]
    out = to_uint8(y)[0].permute(1, 2, 0).cpu().numpy()
    return out if (xh, xw) == (h, w) else np.asarray(Image.fromarray(out).resize((w, h), Image.BICUBIC))


def input_files(inputs: list[Path]) -> list[Path]:
    found = []
    for item in inputs:
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        elif item.is_file():
            found.append(item)
        else:
            raise Pix2PixError(f"{item}: no such file or folder")
    if not found:
        raise Pix2PixError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {', '.join(map(str, inputs))}")
    return found


def translate(source: str, inputs: list[Path], out_dir: Path, mode: str = "paper", batch_size: int = 8,
              device: torch.device | str = "cpu", seed: int = 0, scale: str = "train",
              max_pixels: int = MAX_PIXELS) -> list[Path]:
    """Translate every image in `inputs` to out_dir/<name>.png; returns the written paths."""
    if scale not in SCALES:
        raise Pix2PixError(f"--scale is {scale!r}; allowed: {', '.join(SCALES)}")
    device = torch.device(device)
    G, info = load_model(source, device)
    resample = input_resample(info["dataset"], info["direction"])
    files = input_files(inputs)
    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="translate", unit="img"):
        rgb = read_input(path, info["dataset"])
        result = translate_image(G, rgb, info["image_size"], mode, batch_size, device, scale, resample, max_pixels,
                                 seed)
        target = out_dir / f"{path.stem}.png"
        with atomic_path(target) as tmp:  # an interrupted run leaves whole images only
            Image.fromarray(result).save(tmp, format="PNG")
        written.append(target)
    return written


EXPORT_FORMATS = ("pt2", "torchscript")


def export(source: str, out: Path, fmt: str = "pt2") -> Path:
    """The generator in eval mode (dropout off, batch-norm running statistics) as a program that
    runs without this package: a torch.export program (any batch size), or traced TorchScript."""
    if fmt not in EXPORT_FORMATS:
        raise Pix2PixError(f"--format is {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    G, info = load_model(source, torch.device("cpu"))
    G.eval()
    size = info["image_size"]
    with torch.no_grad(), atomic_path(out) as tmp:
        if fmt == "pt2":  # example batch 2: torch.export keeps a batch of 0 or 1 symbolic only from 2 up
            program = torch.export.export(G, (torch.zeros(2, 3, size, size),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
            with open(tmp, "wb") as f:  # a file object: given a path, torch.export wants it to end in .pt2
                torch.export.save(program, f)
        else:
            torch.jit.trace(G, torch.zeros(1, 3, size, size)).save(str(tmp))
    return out
