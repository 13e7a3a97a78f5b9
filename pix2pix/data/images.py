"""Reading image files as people have them: 8 or 16 bits, grey, palette or RGBA, rotated by EXIF.

Every reader returns 8-bit arrays and raises Pix2PixError naming the file when it cannot:
- photos (`read_rgb`): shown as a viewer shows them (EXIF orientation applied), 16-bit channels
  scaled to 8 bits (65535 -> 255, never clipped), grey and palette images expanded to RGB, and
  transparency composited on white (a cut-out on a white page, as viewers show it);
- label maps (`read_label`): class ids as an (H, W) array, or a colour map as (H, W, 3). Ids are
  what a single-channel file holds (grey, 1-bit, 16-bit, a palette PNG's index), and an RGB(A) file
  whose R = G = B are all below the palette's size (as the car-segmentation masks hold them); any
  other RGB file is a colour map (a black and white one too, or an ADE20K grey).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pix2pix.errors import Pix2PixError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
LITTER = {".ds_store", "thumbs.db", "desktop.ini", "__macosx"}  # what operating systems leave in folders
WIDE = {"I", "I;16", "I;16B", "I;16L", "I;16N"}  # 16-bit grey (PNG, TIFF); "I" is how some 16-bit files open
BACKGROUND = (255, 255, 255)  # what transparent pixels become


def is_litter(relative: Path) -> bool:
    """Hidden files and folders (.DS_Store, ._x), Thumbs.db, desktop.ini, __MACOSX/: not data."""
    return any(part.startswith(".") or part.lower() in LITTER for part in relative.parts)


def image_files(root: Path) -> list[Path]:
    """Every file under `root` but litter, sorted; the caller decides what a non-image means."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not is_litter(p.relative_to(root)))


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS


FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")  # raster formats only: no EPS (Ghostscript)
UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def open_image(path, name: str | None = None) -> Image.Image:
    """The decoded image (path or file object), turned as its EXIF orientation says; Pix2PixError
    naming `name` (default: the path) when it cannot be read."""
    try:
        with Image.open(path, formats=FORMATS) as img:
            img.load()
            try:
                if img.getexif().get(0x0112, 1) != 1:  # only a turn needs a new image (exif_transpose copies)
                    return ImageOps.exif_transpose(img)
            except Exception:  # a malformed EXIF block: the pixels as stored
                pass
            return img  # loaded: usable once the file is closed
    except UNREADABLE as err:
        raise Pix2PixError(f"{name or path}: unreadable image ({err}); replace or remove the file") from None


def image_header(path: str | Path) -> tuple[int, int, str]:
    """(width, height, mode) as a viewer shows the image, from the header alone (no pixels decoded)."""
    try:
        with Image.open(path, formats=FORMATS) as img:
            (w, h), mode = img.size, img.mode
            try:
                turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # orientations that swap the axes
            except Exception:
                turned = False
    except UNREADABLE as err:
        raise Pix2PixError(f"{path}: unreadable image ({err}); replace or remove the file") from None
    return (h, w, mode) if turned else (w, h, mode)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as a viewer shows the image (image_header's)."""
    return image_header(path)[:2]


def _eight_bit(img: Image.Image, path) -> Image.Image:
    """16-bit grey scaled to 8 bits (x / 257: 65535 -> 255); other modes as they are."""
    if img.mode in WIDE:
        wide = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8))
    if img.mode == "F":
        raise Pix2PixError(f"{path}: a 32-bit float image; save it with 8 or 16 bits per channel")
    return img


def to_rgb(img: Image.Image, path="image") -> np.ndarray:
    """(H, W, 3) uint8 of any decoded image; transparency composited on BACKGROUND."""
    img = _eight_bit(img, path)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGB" and "transparency" in img.info):
        img = img.convert("RGBA")
        page = Image.new("RGBA", img.size, BACKGROUND + (255,))
        img = Image.alpha_composite(page, img)
    return np.asarray(img.convert("RGB"))


def read_rgb(path, name: str | None = None) -> np.ndarray:
    """A photo as (H, W, 3) uint8 (module docstring: orientation, bits, transparency)."""
    return to_rgb(open_image(path, name), name or path)


def read_label(path, classes: int | None = None, name: str | None = None) -> np.ndarray:
    """A label map: (H, W) uint8 class ids, or (H, W, 3) uint8 colours (module docstring); `classes`
    is the palette's size."""
    img, name = open_image(path, name), name or path
    if img.mode in WIDE:  # ids are not scaled as a photo's grey levels are
        ids = np.asarray(img, dtype=np.int64)
        if ids.max(initial=0) > 255:
            raise Pix2PixError(f"{name}: class ids up to {ids.max()}; at most 255 are supported")
        return ids.astype(np.uint8)
    if img.mode in ("1", "L", "P"):
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("LA", "PA"):
        return np.asarray(img.getchannel(0), dtype=np.uint8)
    return as_ids(np.asarray(img.convert("RGB")), classes)


def as_ids(rgb: np.ndarray, classes: int | None) -> np.ndarray:
    """An RGB label map whose R = G = B are all class ids of a `classes`-colour palette, as (H, W)
    ids; any other, as it is (colours)."""
    grey = (rgb[..., :1] == rgb).all()
    return np.ascontiguousarray(rgb[..., 0]) if grey and classes and rgb.max() < classes else rgb
