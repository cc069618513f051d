"""Decode photo bytes into a clean RGB image, and make thumbnails.

Every photo, indexed or queried, goes through ``decode`` so they are treated
alike: content sniffed (not the extension), size checked before any pixel is
decoded (decompression bombs), JPEGs decoded at reduced scale when that is all
the model needs (Pillow's ``draft``), EXIF orientation applied, first frame of
animations, and any mode (CMYK, palette with transparency, 16-bit, float,
grey) turned into 8-bit RGB.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pillow_heif
import rawpy
from PIL import Image, UnidentifiedImageError

# We do our own pixel-count check with a clear message; Pillow's own limit stays as a backstop.
Image.MAX_IMAGE_PIXELS = None


# The formats the README promises, and only their decoders: Pillow's others (PCX, SGI, TGA, XBM, ICO, PPM, ...)
# are rarely photos and each is more parser for hostile bytes to reach (issue #24). Multi-picture JPEGs (MPO)
# come through the JPEG decoder. HEIC/HEIF (the iPhone's photos) through pillow-heif's plugin (libheif, in its
# wheels): it reads the size from the header like Pillow's own decoders, and applies the photo's rotation itself
# (its EXIF orientation then reads 1), so the checks below hold for it too.
pillow_heif.register_heif_opener(thumbnails=False)
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF")


# Camera RAW files are read by LibRaw through rawpy (its wheels bundle it): every format LibRaw knows, told by
# content; TIFF containers (DNG, NEF, CR2, ARW...) that Pillow would open at their small preview are recognised by
# these tags of their first image
NEW_SUBFILE_TYPE, MAKE, SUB_IFDS, DNG_VERSION = 254, 271, 330, 50706
PIXELS_PER_BYTE = 32  # a camera's RAW holds at least a bit or so per pixel (lossy DNGs ~4 bits): far fewer is a lie
# how RAW files begin (TIFF containers; Fuji RAF; Olympus ORF; Panasonic RW2; Minolta MRW; Sigma X3F; Canon CRW);
# Canon's CR3 is an ISO box file of brand "crx "
RAW_SIGNATURES = (b"II*\0", b"MM\0*", b"FUJIFILMCCD-RAW", b"IIRO", b"IIRS", b"MMOR", b"IIU\0", b"\0MRM", b"FOVb",
                  b"II\x1a\0\0\0HEAPCCDR")  # fmt: skip
RAW_ERRORS = (rawpy.LibRawError, OSError, ValueError, MemoryError)  # what LibRaw raises on a file it cannot read


class BadImage(ValueError):
    """The bytes are not a usable photo; ``str(exc)`` says why in words."""


class DecodeBusy(BadImage):
    """Other decodes hold the memory budget for longer than a decode may wait: retry later (503)."""


# Bytes per pixel of each mode as Pillow holds it in memory (every 3-band mode takes 4 bytes). A 570 KB TIFF of
# float zeros is 316 MB once decoded: the budget counts this, not the pixel count (issue #24).
MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 4, "La": 4, "PA": 4, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
NOT_REDUCIBLE = ("1", "P", "PA")  # Pillow's reduce refuses these: converted first (4 bytes per pixel more)
TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # EXIF orientation -> the turn that shows the photo upright (as ImageOps)
DECODE_WAIT = 120.0  # seconds a decode waits for memory: long enough for an index job, bounded for a request


class MemoryBudget:
    """The bytes all decodes of this process may hold at once: a flood of huge photos waits here instead of
    multiplying its peak memory by the number of clients."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self._free = threading.Condition()

    @contextlib.contextmanager
    def hold(self, need: int, wait: float = DECODE_WAIT) -> Iterator[None]:
        with self._free:
            if not self._free.wait_for(lambda: self.used + need <= self.total, timeout=wait):
                raise DecodeBusy(f"busy: other photos being decoded hold {self.used >> 20} MB; retry in a moment")
            self.used += need
        try:
            yield
        finally:
            with self._free:
                self.used -= need
                self._free.notify_all()


DECODE_MEMORY = MemoryBudget(1 << 30)  # the service sets it from LOOKALIKE_MAX_DECODE_MEMORY


def set_decode_memory(total: int) -> None:
    """The process-wide budget of decoded bytes (one budget: every library of the process decodes in it)."""
    with DECODE_MEMORY._free:
        DECODE_MEMORY.total = total
        DECODE_MEMORY._free.notify_all()


def decoded_bytes(im: Image.Image) -> int:
    """The memory decoding ``im`` takes at its peak, by mode and bit depth (not by pixel count alone)."""
    width, height = im.size
    per_pixel = MODE_BYTES.get(im.mode, 4) + (4 if im.mode in NOT_REDUCIBLE else 0)
    return width * height * per_pixel


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # RGB, possibly reduced by draft
    width: int  # original dimensions, after EXIF orientation
    height: int
    format: str


def decode(data: bytes, max_pixels: int, min_side: int = 0,
           box: tuple[float, float, float, float] | None = None) -> Decoded:  # fmt: skip
    """Decode ``data``; ``min_side`` lets JPEGs decode at the smallest scale still >= it (that of ``box``, a region
    in original pixels, when given: a region of a 12-megapixel photo drafted to 256 px would be a few dozen)."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raw = decode_raw(data, max_pixels, min_side)
        if raw is not None:
            return raw
        raise BadImage(f"not an image in a supported format ({', '.join(FORMATS)}, camera RAW)") from None
    except Exception as exc:  # Pillow raises many types on garbage headers
        raise BadImage(f"unreadable image header: {exc}") from None
    fmt = im.format or "unknown"
    if fmt == "TIFF" and holds_raw(im):
        raw = decode_raw(data, max_pixels, min_side)  # a camera's TIFF container: its IFD0 is only a preview
        if raw is not None:
            return raw
    width, height = im.size
    if width <= 0 or height <= 0:
        raise BadImage(f"invalid dimensions {width}x{height}")
    if width * height > max_pixels:
        raise BadImage(f"too many pixels: {width}x{height} exceeds max_pixels={max_pixels} (decompression bomb guard)")
    if min_side and box is not None and all(map(math.isfinite, box)) and box[0] < box[2] and box[1] < box[3]:
        # a bad box decodes as the whole photo would (the crop refuses it); a small one of a large photo asks for
        # every pixel, within max_pixels and the decode memory budget like any PNG
        region = max(1.0, min(box[2] - box[0], box[3] - box[1]))
        min_side = min(min(width, height), math.ceil(min_side * min(width, height) / region))
    need = decoded_bytes(im)
    if need > DECODE_MEMORY.total:
        raise BadImage(f"too many pixels: {width}x{height} in mode {im.mode} takes {need >> 20} MB to decode, more "
                       f"than max_decode_memory={DECODE_MEMORY.total >> 20} MB")  # fmt: skip
    try:
        with DECODE_MEMORY.hold(need):
            im.seek(0)  # first frame of animations
            orientation = im.getexif().get(0x0112, 1)
            if min_side and fmt == "JPEG":
                im.draft(im.mode, (min_side, min_side))
            im.load()
            im = reduced(im, min_side)
            if orientation in TURNS:
                im = im.transpose(TURNS[orientation])  # after reducing: turns a small copy
            rgb = to_rgb(im)
    except BadImage:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, RuntimeError) as exc:  # pillow-heif: RuntimeError
        raise BadImage(f"truncated or corrupt {fmt} data: {exc}") from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return Decoded(rgb, width, height, fmt)


def holds_raw(im: Image.Image) -> bool:
    """Whether a TIFF is a camera's RAW container (DNG, NEF, CR2, ARW, PEF, SRW...): a DNG version, or a camera
    maker with sub-images or a first image marked as a reduced-resolution preview."""
    tags = getattr(im, "tag_v2", {})
    try:
        preview = bool(int(tags.get(NEW_SUBFILE_TYPE, 0) or 0) & 1)
    except (TypeError, ValueError, OverflowError):  # a hostile value ("abc", NaN, 1/0): not a camera's mark
        preview = False
    # a scanner's or a microscope's pyramid TIFF has sub-images too, but no camera maker (Make) or DNG version
    return DNG_VERSION in tags or (MAKE in tags and (SUB_IFDS in tags or preview))


def decode_raw(data: bytes, max_pixels: int, min_side: int = 0) -> Decoded | None:
    """A camera RAW file decoded by LibRaw (rawpy): demosaiced at half size when that is still far more than the
    model and the thumbnail need (a camera's photo always is), the camera's white balance, 8 bits, its orientation
    applied.
    None when LibRaw does not know the bytes either. Sizes and memory are checked before any pixel is decoded."""
    try:
        raw = rawpy.imread(io.BytesIO(data))
    except rawpy.LibRawFileUnsupportedError:
        return None
    except RAW_ERRORS as exc:
        if not data.startswith(RAW_SIGNATURES) and data[4:12] != b"ftypcrx ":
            return None  # LibRaw could not read it, and it does not begin like a RAW file: not one (a text file)
        what = "TIFF or camera RAW" if data.startswith((b"II*\0", b"MM\0*")) else "camera RAW"
        raise BadImage(f"truncated or corrupt {what} data: {exc}") from None
    with raw:
        sizes = raw.sizes
        width, height = int(sizes.width), int(sizes.height)
        if width <= 0 or height <= 0:
            raise BadImage(f"invalid dimensions {width}x{height}")
        if width * height > max_pixels:
            raise BadImage(f"too many pixels: {width}x{height} exceeds max_pixels={max_pixels} "
                           "(decompression bomb guard)")  # fmt: skip
        if width * height > PIXELS_PER_BYTE * len(data):  # 6 KB claiming 65 megapixels: LibRaw would invent them
            raise BadImage(f"corrupt RAW data: {width}x{height} pixels claimed in only {len(data)} bytes")
        # the unpacked sensor data (16 bits a sample; 4 samples a pixel for LinearRaw, known only once unpacked),
        # LibRaw's image (4 x 16 bits a pixel) and the 8-bit output: counted whole, though half size needs less
        need = int(sizes.raw_width) * int(sizes.raw_height) * 2 * 4 + width * height * 11
        if need > DECODE_MEMORY.total:
            raise BadImage(f"too many pixels: the RAW photo {width}x{height} takes up to {need >> 20} MB to decode, "
                           f"more than max_decode_memory={DECODE_MEMORY.total >> 20} MB")  # fmt: skip
        try:
            with DECODE_MEMORY.hold(need):
                stacked = raw.raw_type == rawpy.RawType.Stack  # LinearRaw and the like: whole pixels, no half size
                half = not stacked and min(width, height) >= 4 * max(min_side, 256)  # a quarter of the pixels: plenty
                pixels = raw.postprocess(half_size=half, use_camera_wb=True, output_bps=8)
        except BadImage:  # DecodeBusy: the budget is held by others (503, retry), not a corrupt file
            raise
        except RAW_ERRORS as exc:
            raise BadImage(f"truncated or corrupt camera RAW data: {exc}") from None
        turned = bool(int(sizes.flip) & 4)  # LibRaw's flip codes with a quarter turn (5, 6, and 4, 7 transposed)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or min(pixels.shape[:2]) < 2:  # seen: a DNG whose tags lie
        raise BadImage(f"corrupt RAW data: LibRaw made a picture of shape {pixels.shape} from it")
    image = reduced(Image.fromarray(np.ascontiguousarray(pixels), mode="RGB"), min_side)
    return Decoded(image, height if turned else width, width if turned else height, "RAW")


def reduced(im: Image.Image, min_side: int) -> Image.Image:
    """A huge photo (JPEGs were reduced while decoding, by draft) made smaller in its own mode, before any
    conversion (a float or 16-bit photo converted first took 8 bytes a pixel, several times over); still at
    least twice what the callers need. Pillow's integer ``reduce`` where the mode allows, a box resize else."""
    if not min_side or min(im.size) < 4 * min_side:
        return im
    factor = min(im.size) // (2 * min_side)
    if im.mode in ("P", "PA"):  # a box filter on palette indices would mix unrelated colours
        im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
    if im.mode == "1" or im.mode.startswith("I;16"):
        return im.resize((im.width // factor, im.height // factor), Image.Resampling.BOX)
    return im.reduce(factor)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.nan_to_num(np.array(im, dtype=np.float32), copy=False)  # float32, in place: small by now
        if im.mode.startswith("I;16"):
            arr /= 257.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr -= lo
            arr *= 255.0 / (hi - lo) if hi > lo else 0.0
        im = Image.fromarray(np.clip(arr, 0, 255, out=arr).astype(np.uint8), mode="L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def thumbnail_jpeg(image: Image.Image, max_size: int, quality: int) -> bytes:
    """A JPEG no larger than ``max_size`` on its longest side."""
    thumb = image.copy()
    # bicubic with Pillow's reducing gap: a third cheaper than Lanczos, no visible difference at this size
    thumb.thumbnail((max_size, max_size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality)
    return out.getvalue()
