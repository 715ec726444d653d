"""Frames between their three forms, in one place.

- an image: ``(H, W, 3)`` uint8 RGB, as recorded, shown and sent;
- a model frame: ``(3, H, W)`` float32 in [0, 1], as the model takes and paints;
- a file or bytes any Pillow format holds.

Sizes are ``(height, width)`` everywhere in TinyDreams, as array shapes are;
Pillow's ``(width, height)`` stays inside this module.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def to_image(frame: np.ndarray) -> np.ndarray:
    """A model frame ``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8."""
    return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def to_model_frame(image: np.ndarray) -> np.ndarray:
    """An image ``(H, W, 3)`` uint8 -> a model frame ``(3, H, W)`` float32 in [0, 1]."""
    return np.asarray(image, np.float32).transpose(2, 0, 1) / 255.0


def resize(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """An image ``(H, W, 3)`` uint8 resized to ``size`` = (height, width), bilinear;
    the same array when it has that size already (or ``size`` is None)."""
    if size is None or image.shape[:2] == tuple(size):
        return image
    height, width = size
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _rgb(img: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    rgb = img.convert("RGB")
    if size is not None and (rgb.height, rgb.width) != tuple(size):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB, resized to ``size`` = (height, width)."""
    with Image.open(path) as img:
        return _rgb(img, size)


def decode_image(data: bytes, size: tuple[int, int] | None = None,
                 max_pixels: int | None = None) -> np.ndarray:
    """Image bytes (PNG, JPEG, any format Pillow reads) -> ``(H, W, 3)`` uint8,
    resized to ``size``; ``ValueError`` for bytes that are no image or one of more
    than ``max_pixels`` pixels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise ValueError(f"an image of {img.width}x{img.height} pixels is too large")
            return _rgb(img, size)
    except ValueError:
        raise
    except Exception as err:  # Pillow raises many kinds for bad bytes
        raise ValueError(f"unreadable image ({err})") from None


def encode_image(image: np.ndarray, encoding: str, quality: int = 85) -> bytes:
    """``(H, W, 3)`` uint8 -> ``raw`` RGB8 bytes, ``jpeg`` at ``quality``, or ``png``."""
    if encoding == "raw":
        return np.ascontiguousarray(image).tobytes()
    buf = io.BytesIO()
    if encoding == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    elif encoding == "png":
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    else:
        raise ValueError(f"unknown encoding {encoding!r}; choose raw, jpeg or png")
    return buf.getvalue()
