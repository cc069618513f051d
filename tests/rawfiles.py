"""Camera RAW (DNG) files made in the tests from real photos: a Bayer mosaic (RGGB, 12 bits) in a DNG container
written with tifffile, bare or as cameras write it (an RGB preview first, the mosaic in a sub-image)."""

from __future__ import annotations

import io

import numpy as np
import tifffile
from PIL import Image

DNG_VERSION, DNG_BACKWARD, CFA_DIM, CFA_PATTERN = 50706, 50707, 33421, 33422
BLACK, WHITE, COLOR_MATRIX, ILLUMINANT, NEUTRAL, UNIQUE_MODEL = 50714, 50717, 50721, 50778, 50728, 50708
CFA = 32803  # PhotometricInterpretation: a colour filter array


def mosaic(picture: Image.Image) -> np.ndarray:
    """The photo as an RGGB sensor would have seen it (linear light), 12 bits a photosite."""
    srgb = np.asarray(picture.convert("RGB"), dtype=np.float64) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)  # a sensor counts light
    rgb = np.round(linear * 4095.0).astype(np.uint16)
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    out = np.zeros((h, w), np.uint16)
    out[0::2, 0::2], out[0::2, 1::2] = rgb[0:h:2, 0:w:2, 0], rgb[0:h:2, 1:w:2, 1]
    out[1::2, 0::2], out[1::2, 1::2] = rgb[1:h:2, 0:w:2, 1], rgb[1:h:2, 1:w:2, 2]
    return out


def container_tags(orientation: int = 1) -> list[tuple]:
    """What a DNG's first image carries: the version, the camera, its colour calibration, the orientation."""
    # the camera's colours are linear sRGB: its matrix is XYZ (D65) -> linear sRGB
    xyz_to_srgb = (3.2404542, -1.5371385, -0.4985314, -0.9692660, 1.8760108, 0.0415560, 0.0556434, -0.2040259,
                   1.0572252)  # fmt: skip
    identity = [v for x in xyz_to_srgb for v in (round(x * 10000), 10000)]
    return [(DNG_VERSION, "B", 4, (1, 4, 0, 0), True), (DNG_BACKWARD, "B", 4, (1, 1, 0, 0), True),
            (COLOR_MATRIX, "2i", 9, identity, True), (ILLUMINANT, "H", 1, (21,), True),
            (NEUTRAL, "2I", 3, (1, 1, 1, 1, 1, 1), True), (271, "s", 0, "Lookalike", True),
            (272, "s", 0, "Test Camera", True), (UNIQUE_MODEL, "s", 0, "Lookalike Test Camera", True),
            (274, "H", 1, (orientation,), True)]  # fmt: skip


# what the mosaic's own image carries: its filter pattern and levels
MOSAIC_TAGS = [(CFA_DIM, "H", 2, (2, 2), True), (CFA_PATTERN, "B", 4, (0, 1, 1, 2), True),
               (BLACK, "H", 1, (0,), True), (WHITE, "H", 1, (4095,), True)]  # fmt: skip


def dng(picture: Image.Image, orientation: int = 1, preview: bool = False) -> bytes:
    """A DNG of the photo; with ``preview``, laid out as cameras write one: a small RGB preview as the first image
    (what Pillow would open), the mosaic in a sub-image."""
    out = io.BytesIO()
    with tifffile.TiffWriter(out) as tif:
        if preview:
            small = np.asarray(picture.convert("RGB").resize((64, 48)))
            tif.write(small, photometric="rgb", subfiletype=1, subifds=1, extratags=container_tags(orientation),
                      metadata=None)  # fmt: skip
            tif.write(mosaic(picture), photometric=CFA, subfiletype=0, extratags=MOSAIC_TAGS, metadata=None)
        else:
            tif.write(mosaic(picture), photometric=CFA, subfiletype=0,
                      extratags=container_tags(orientation) + MOSAIC_TAGS, metadata=None)  # fmt: skip
    return out.getvalue()


def claiming(data: bytes, width: int, height: int) -> bytes:
    """The DNG with its first image's width and height replaced (the pixels stay few): a file that lies."""
    import struct

    out = bytearray(data)
    (offset,) = struct.unpack_from("<I", out, 4)
    (count,) = struct.unpack_from("<H", out, offset)
    for n in range(count):
        at = offset + 2 + 12 * n
        tag, kind = struct.unpack_from("<HH", out, at)
        if tag in (256, 257):
            value = width if tag == 256 else height
            struct.pack_into("<H" if kind == 3 else "<I", out, at + 8, value)
    return bytes(out)
