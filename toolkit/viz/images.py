"""Static images (NumPy/Pillow): the paper's Fig. 4 grid, PNG output, and the image helpers the figures share."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from toolkit.artifacts import atomic_write_bytes

if TYPE_CHECKING:
    from toolkit.encoders.autoencoder import Reconstruction


def embedding_tile(latent: np.ndarray) -> np.ndarray:
    """Lay a (channels, side, side) bottleneck out as one 2-d image, channels in a grid.

    The channel maps are tiled row by row in a grid as close to square as possible; 24
    channels of 3x3 become a 4 x 6 grid, a 12 x 18 image. Unused grid cells are NaN.
    """
    channels, side, _ = latent.shape
    cols = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / cols)
    tile = np.full((rows * side, cols * side), np.nan, dtype=np.float32)
    for c in range(channels):
        r, q = divmod(c, cols)
        tile[r * side : (r + 1) * side, q * side : (q + 1) * side] = latent[c]
    return tile


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An H x W x 1 (grey) image as H x W x 3; an RGB image unchanged."""
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def upscale(image: np.ndarray, size: int, *, fit: Literal["longest", "height"] = "longest") -> np.ndarray:
    """Enlarge an H x W x C image by an integer factor (nearest neighbour) to about ``size`` pixels.

    The factor is ``size`` over the longest side, or over the height with ``fit="height"``
    (rows of equal height, as in Fig. 4), and at least 1. Grey (one-channel) images come
    back as H x W (what image widgets expect).
    """
    side = image.shape[0] if fit == "height" else max(image.shape[:2])
    factor = max(1, size // side)
    big = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    return big[..., 0] if big.shape[2] == 1 else big


def figure4_image(result: Reconstruction, scale: int = 4, gap: int = 2) -> np.ndarray:
    """The paper's Fig. 4 as one RGB image: inputs (top), embeddings, reconstructions (bottom).

    Embeddings are drawn with :func:`embedding_tile`, grey levels scaled over all shown
    samples so they can be compared with each other.
    """
    crop = result.inputs.shape[1]
    size = crop * scale
    tiles = [embedding_tile(latent) for latent in result.latents]
    values = np.concatenate([t[np.isfinite(t)] for t in tiles])
    low, high = float(values.min()), float(values.max())
    span = high - low or 1.0
    columns = []
    for i in range(len(result.indices)):
        top = upscale(to_rgb(result.inputs[i]), size, fit="height")
        bottom = upscale(to_rgb(result.outputs[i]), size, fit="height")
        grey = np.nan_to_num((tiles[i] - low) / span, nan=0.0)
        emb = (grey * 255).round().astype(np.uint8)[..., None]
        emb = upscale(to_rgb(emb), size, fit="height")
        width = max(top.shape[1], emb.shape[1])
        column = np.full((top.shape[0] + emb.shape[0] + bottom.shape[0] + 2 * gap, width, 3), 255, np.uint8)
        column[: top.shape[0], : top.shape[1]] = top
        column[top.shape[0] + gap : top.shape[0] + gap + emb.shape[0], : emb.shape[1]] = emb
        column[-bottom.shape[0] :, : bottom.shape[1]] = bottom
        columns.append(column)
    height = max(c.shape[0] for c in columns)
    canvas = np.full((height, sum(c.shape[1] for c in columns) + gap * (len(columns) - 1), 3), 255, np.uint8)
    x = 0
    for column in columns:
        canvas[: column.shape[0], x : x + column.shape[1]] = column
        x += column.shape[1] + gap
    return canvas


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an RGB or grey uint8 image as PNG, atomically."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
