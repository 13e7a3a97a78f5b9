"""Apply a trained generator to a user's own images (`pix2pix translate`) and export it (`pix2pix export`).

An input is fed to the model as its training tiles were made (the generator file's `input`: the
framing, data.fit; nearest resizing and the palette's colours for a label map). Any size and aspect
ratio, at one of two scales:

- train (default): a model sees the world at the scale it was trained on, so the image is framed
  as the training tiles were (framing.frame: crop keeps the whole image with its shorter side at
  the training size, generated in overlapping squares along the longer side; pad pads it to a
  square first), and the output is brought back to the input's size.
- native: the image at its own resolution: whole (padded to a multiple of the size the U-Net
  halves down to 1 pixel, then cropped back) when it has at most `max_pixels`, else in overlapping
  tiles of the training size blended with a smooth window, so no seams show.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from tqdm import tqdm

from pix2pix import generator_file
from pix2pix.data.device_data import to_uint8, to_unit
from pix2pix.data.framing import MAX_PIXELS, frame
from pix2pix.data.images import as_ids, image_files, is_image, read_label, read_rgb
from pix2pix.data.palettes import Palette
from pix2pix.errors import Pix2PixError
from pix2pix.files import atomic_path
from pix2pix.generation import apply, check_mode
from pix2pix.tracking import project_tracking_uri

SCALES = ("train", "native")
MLFLOW_URIS = ("runs:/", "models:/")


def load_model(source: str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """(G, its generator file's description) from models/generator*.pt, a training checkpoint
    (checkpoints/last.pt or best.pt), or MLflow: a run's model (runs:/<id>/model) or a registered
    one (models:/<name>/<version>, models:/<name>@<alias>), fetched into a folder that goes after."""
    if source.startswith(MLFLOW_URIS):
        with tempfile.TemporaryDirectory(prefix="pix2pix-model-") as folder:
            G, bundle = generator_file.load(mlflow_file(source, Path(folder)), device)
    else:
        G, bundle = generator_file.load(source, device)
    return G, {k: v for k, v in bundle.items() if k != "generator"}


def mlflow_file(source: str, folder: Path) -> Path:
    """The generator file inside an MLflow model (or a run's artifact folder), fetched into `folder`."""
    import mlflow  # slow to import: only for MLflow sources

    uri = project_tracking_uri()  # the project's store, as `pix2pix ui` shows it
    mlflow.set_tracking_uri(uri)
    try:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(folder)))
    except Exception as err:
        if getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise Pix2PixError(f"{source}: not in the MLflow store {uri} ({str(err).splitlines()[0][:120]}); runs and "
                               "models live in the store of the machine that trained them (MLFLOW_TRACKING_URI "
                               "names another); the committed model is models/generator.pt (`dvc pull` gets it)") from None
        raise Pix2PixError(f"{source}: cannot fetch it from the MLflow store {uri} ({type(err).__name__}: "
                           f"{str(err)[:200]})") from None
    saved = sorted(folder.rglob("generator.pt")) if folder.is_dir() else [folder]
    if not saved:
        raise Pix2PixError(f"{source}: holds no generator.pt; give a pix2pix model, a run's model/ or a file")
    return saved[0]


def model_input(image: np.ndarray, model: dict, source: str = "input", colours: bool = False) -> np.ndarray:
    """(H, W) class ids or (H, W, 3) uint8 -> the (H, W, 3) the model takes: a label model colours
    class ids (a grey map whose values are all ids of its palette, as images.as_ids reads them, unless
    `colours` says it holds colours) with its palette; a colour map, or any photo, passes as it is."""
    palette = model["input"]["palette"]  # None unless a label model's (generator_file.describe)
    if image.ndim == 3 and palette and not colours:
        image = as_ids(image, len(palette["colours"]))
    if image.ndim == 3:
        return image
    if palette is None:
        if model["input"]["label"]:
            raise Pix2PixError(f"{source}: class ids, but this model has no palette to colour them; give a colour "
                               "label map")
        return np.repeat(image[..., None], 3, axis=2)  # a grey photo: a ragged batch to the MLflow model can hold one
    return Palette.from_dict(palette).colour(image, str(source), fix="give a label map of this model's classes")


def read_input(path, model: dict, name: str | None = None) -> np.ndarray:
    """An input file (a path or a file object) as the model takes it (module docstring)."""
    if model["input"]["label"]:
        palette = model["input"]["palette"]
        image = read_label(path, len(palette["colours"]) if palette else None, name)
    else:
        image = read_rgb(path, name)
    # colours: read_label has already told class ids from colours (as_ids); a photo has no palette
    return model_input(image, model, name or str(path), colours=True)


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


def translate_image(G: torch.nn.Module, rgb: np.ndarray, model: dict, mode: str, batch_size: int, device: torch.device,
                    scale: str = "train", max_pixels: int = MAX_PIXELS, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 in (model_input's), (H, W, 3) uint8 out, fed as `model` (a generator file's
    description) says. `seed` seeds paper mode's dropout: an image's output does not depend on the
    other images translated."""
    size = model["image_size"]
    if scale == "train":
        resample = Image.NEAREST if model["input"]["label"] else Image.BICUBIC
        framed = frame(Image.fromarray(rgb), size, model["input"]["fit"], resample)
        return framed.restore(generate_image(G, np.asarray(framed.image), size, mode, batch_size, device, 0, seed))
    return generate_image(G, rgb, size, mode, batch_size, device, max_pixels, seed)


def generate_image(G: torch.nn.Module, rgb: np.ndarray, size: int, mode: str, batch_size: int, device: torch.device,
                   max_pixels: int, seed: int) -> np.ndarray:
    """G on one (H, W, 3) uint8 image of any size: whole when it has at most max_pixels, else in
    blended size x size tiles (one, for a square of the training size)."""
    x = to_unit(torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].to(device))  # a copy: PIL's arrays are read-only
    xh, xw = x.shape[-2:]
    if xh * xw <= max_pixels:
        y = apply(G, pad_to_multiple(x, size), mode, batch_size, seed)[:, :, :xh, :xw]
    else:
        y = tiled(G, x, size, mode, batch_size, seed)[:, :, :xh, :xw]
    return to_uint8(y)[0].permute(1, 2, 0).cpu().numpy()


def input_files(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(an input image, its output's name under --out): a folder's images by their path inside it
    (OS litter skipped), a file by its name; two inputs that would share an output are refused."""
    found = []
    for item in inputs:
        if item.is_dir():
            found += [(p, p.relative_to(item).with_suffix(".png")) for p in image_files(item) if is_image(p)]
        elif item.is_file():
            found.append((item, Path(item.name).with_suffix(".png")))
        else:
            raise Pix2PixError(f"{item}: no such file or folder")
    if not found:
        raise Pix2PixError(f"no images in {', '.join(map(str, inputs))}")
    clashes = [name for name, count in Counter(out for _, out in found).items() if count > 1]
    if clashes:
        raise Pix2PixError(f"several inputs would be written to {clashes[0]} (such as x.png and x.jpg); translate "
                           "them into different --out folders")
    return found


def translate(source: str, inputs: list[Path], out_dir: Path, mode: str = "paper", batch_size: int = 8,
              device: torch.device | str = "cpu", seed: int = 0, scale: str = "train",
              max_pixels: int = MAX_PIXELS) -> list[Path]:
    """Translate every image in `inputs` to out_dir/<name>.png; returns the written paths. An input
    that cannot be read does not stop the others: the run ends with one error naming each."""
    if scale not in SCALES:
        raise Pix2PixError(f"--scale is {scale!r}; allowed: {', '.join(SCALES)}")
    check_mode(mode)
    device = torch.device(device)
    G, model = load_model(source, device)
    files = input_files(inputs)
    written, failed = [], []
    for path, name in tqdm(files, desc="translate", unit="img"):
        try:
            rgb = read_input(path, model)
        except Pix2PixError as err:
            failed.append(str(err))
            continue
        result = translate_image(G, rgb, model, mode, batch_size, device, scale, max_pixels, seed)
        target = out_dir / name
        with atomic_path(target) as tmp:  # an interrupted run leaves whole images only
            Image.fromarray(result).save(tmp, format="PNG")
        written.append(target)
    if failed:
        raise Pix2PixError(f"{len(failed)} of {len(files)} inputs were not translated ({'; '.join(failed[:3])}"
                           f"{'; ...' if len(failed) > 3 else ''}); the other {len(written)} are in {out_dir}")
    return written


EXPORT_FORMATS = ("pt2", "torchscript")


def export(source: str, out: Path, fmt: str = "pt2") -> Path:
    """The generator in eval mode (dropout off, batch-norm running statistics) as a program that
    runs without this package: a torch.export program (any batch size), or traced TorchScript."""
    if fmt not in EXPORT_FORMATS:
        raise Pix2PixError(f"--format is {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    G, info = load_model(source, torch.device("cpu"))
    G.eval().requires_grad_(False)  # an inference program: its outputs carry no autograd history
    size = info["image_size"]
    with torch.no_grad(), atomic_path(out) as tmp:
        if fmt == "pt2":  # example batch 2: torch.export keeps a batch of 0 or 1 symbolic only from 2 up
            program = torch.export.export(G, (torch.zeros(2, 3, size, size),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
            with open(tmp, "wb") as f:  # a file object: given a path, torch.export wants it to end in .pt2
                torch.export.save(program, f)
        else:
            torch.jit.trace(G, torch.zeros(1, 3, size, size)).save(str(tmp))
    return out
