"""Decoding: every mode and format becomes RGB; every kind of bad file becomes BadImage with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from lookalike.imaging import BadImage, decode, thumbnail_jpeg, to_rgb
from tests import rawfiles
from tests.badfiles import bomb_png, real_jpeg
from tests.conftest import photo

MAX = 80_000_000


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **kw)
    return out.getvalue()


def base() -> Image.Image:
    return Image.open(photo("tiger_cat", 0)).convert("RGB")


def test_real_jpeg_decodes_with_original_size() -> None:
    data = real_jpeg()
    full = Image.open(io.BytesIO(data))
    d = decode(data, MAX)
    assert (d.width, d.height) == full.size and d.image.mode == "RGB" and d.format == "JPEG"


def test_draft_decodes_large_jpeg_at_reduced_scale() -> None:
    big = base().resize((2000, 1500))
    d = decode(encode(big, "JPEG", quality=90), MAX, min_side=256)
    assert (d.width, d.height) == (2000, 1500)  # original size is reported
    assert 256 <= min(d.image.size) < 1500  # but pixels were decoded at a reduced scale
    assert min(d.image.size) <= 2 * 375  # the smallest power-of-two scale still >= 256


def test_a_region_is_decoded_at_the_scale_it_needs() -> None:
    """A region query needs its region, not the whole photo, at the models' side: a 256 px box of a 2,048 px JPEG
    drafted to 280 px would be 35 px; it is decoded whole instead, a 1,024 px box at half scale."""
    buf = io.BytesIO()
    Image.open(photo("castle", 2)).convert("RGB").resize((2048, 2048)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    assert min(decode(data, 10**8, 280).image.size) == 512  # the whole photo: drafted to a quarter
    small = decode(data, 10**8, 280, box=(896, 896, 1152, 1152))
    assert min(small.image.size) == 2048 and (small.width, small.height) == (2048, 2048)
    assert min(decode(data, 10**8, 280, box=(0, 0, 1024, 1024)).image.size) == 1024
    # a bad box is decoded as the whole photo is (and refused by the crop, not made a full decode)
    for bad in ((5, 5, 1, 1), (0, 0, float("nan"), 9), (0, 0, float("inf"), 9), (0, 9, 9, 9)):
        assert min(decode(data, 10**8, 280, box=bad).image.size) == 512


def test_exif_orientation_is_applied() -> None:
    im = base().resize((400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    d = decode(encode(im, "JPEG", exif=exif), MAX)
    assert d.image.size == (200, 400) and (d.width, d.height) == (200, 400)


@pytest.mark.parametrize(
    "make",
    [
        lambda: base().convert("CMYK"),
        lambda: base().convert("L"),
        lambda: base().convert("1"),
        lambda: base().convert("LA"),
        lambda: base().convert("RGBA"),
    ],
    ids=["cmyk", "grey", "bilevel", "grey-alpha", "rgba"],
)
def test_modes_become_rgb(make) -> None:
    im = make()
    fmt = "JPEG" if im.mode in ("CMYK", "L") else "PNG"
    d = decode(encode(im, fmt), MAX, min_side=224)
    assert d.image.mode == "RGB" and d.image.size == im.size


def test_palette_with_transparency_is_composited_on_white() -> None:
    im = Image.new("P", (64, 64), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (0, 0, 32, 64))
    im.info["transparency"] = 0
    d = decode(encode(im, "PNG", transparency=0), MAX)
    px = np.asarray(d.image)
    assert tuple(px[10, 10]) == (255, 0, 0) and tuple(px[10, 50]) == (255, 255, 255)


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    arr = np.linspace(0, 65535, 64 * 64, dtype=np.uint16).reshape(64, 64)
    im = Image.fromarray(arr)
    assert im.mode == "I;16"
    d = decode(encode(im, "PNG"), MAX)
    out = np.asarray(d.image)[:, :, 0]
    assert out.min() == 0 and out.max() == 255 and 100 < out.mean() < 155


def test_float_mode_is_stretched() -> None:
    im = Image.fromarray(np.linspace(-5, 5, 32 * 32, dtype=np.float32).reshape(32, 32))
    assert np.asarray(to_rgb(im)).max() == 255


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    px = np.asarray(decode(data, MAX).image)
    assert px[16, 16, 0] > 200 and px[16, 16, 2] < 50


@pytest.mark.parametrize("fmt", ["WEBP", "PNG", "BMP", "TIFF"])
def test_other_formats_by_content(fmt: str) -> None:
    d = decode(encode(base(), fmt), MAX)
    assert d.format == fmt and d.image.mode == "RGB"


def test_empty_file() -> None:
    with pytest.raises(BadImage, match="empty file"):
        decode(b"", MAX)


def test_truncated_jpeg() -> None:
    data = real_jpeg()
    with pytest.raises(BadImage, match="truncated"):
        decode(data[: len(data) // 3], MAX)


def test_garbage_after_jpeg_header() -> None:
    data = real_jpeg()
    with pytest.raises(BadImage):
        decode(data[:20] + bytes(range(256)) * 16, MAX)


def test_text_file_is_not_an_image() -> None:
    with pytest.raises(BadImage, match="not an image"):
        decode(b"hello, I am text\n" * 10, MAX)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    data = bomb_png()
    assert len(data) < 200_000  # small file, 400 million pixels
    with pytest.raises(BadImage, match="too many pixels: 20000x20000"):
        decode(data, MAX)


def test_thumbnail_respects_max_size_and_is_jpeg() -> None:
    thumb = thumbnail_jpeg(base().resize((1000, 500)), 256, 70)
    im = Image.open(io.BytesIO(thumb))
    assert im.format == "JPEG" and im.size == (256, 128)


def test_an_iphone_heic_photo_decodes() -> None:
    """HEIC (the iPhone's default format) through pillow-heif: its size from the header, RGB pixels close to the
    photo it was encoded from, reduced like any photo when asked."""
    im = base()
    got = decode(encode(im, "HEIF", quality=90), MAX)
    assert got.format == "HEIF" and (got.width, got.height) == im.size and got.image.mode == "RGB"
    difference = np.abs(np.asarray(got.image, dtype=np.int16) - np.asarray(im, dtype=np.int16)).mean()
    assert difference < 8, difference
    big = im.resize((im.width * 6, im.height * 6))
    small = decode(encode(big, "HEIF", quality=50), MAX, min_side=64)
    assert (small.width, small.height) == big.size and min(small.image.size) < min(big.size)


def test_bad_heic_files_are_refused_with_a_reason() -> None:
    data = encode(base(), "HEIF", quality=90)
    with pytest.raises(BadImage, match="HEIF"):
        decode(data[: len(data) // 2], MAX)  # truncated
    with pytest.raises(BadImage, match="too many pixels"):
        decode(encode(Image.new("RGB", (4000, 3000)), "HEIF", quality=10), 10_000_000)
    with pytest.raises(BadImage):
        decode(data[:12] + b"\0" * 200, MAX)  # an ftyp box and nothing after it


def grey_correlation(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("L").resize((64, 48)), dtype=np.float64).ravel()
    y = np.asarray(b.convert("L").resize((64, 48)), dtype=np.float64).ravel()
    return float(np.corrcoef(x, y)[0, 1])


@pytest.mark.parametrize("preview", [False, True], ids=["bare", "with-preview"])
def test_a_camera_raw_photo_decodes(preview: bool) -> None:
    """A DNG (LibRaw through rawpy): the sensor's picture at its full size, not the small preview Pillow would
    open; the camera's orientation applied; reduced like any photo when asked."""
    im = base()
    got = decode(rawfiles.dng(im, preview=preview), MAX)
    assert got.format == "RAW" and (got.width, got.height) == (im.width // 2 * 2, im.height // 2 * 2)
    assert got.image.mode == "RGB" and grey_correlation(got.image, im) > 0.95
    turned = decode(rawfiles.dng(im, orientation=6, preview=preview), MAX)
    assert (turned.width, turned.height) == (got.height, got.width)
    assert grey_correlation(turned.image, im.transpose(Image.Transpose.ROTATE_270)) > 0.95
    big = decode(rawfiles.dng(im.resize((im.width * 4, im.height * 4)), preview=preview), MAX, min_side=64)
    assert big.width == im.width * 4 and min(big.image.size) < min(big.width, big.height) // 2


def test_bad_raw_files_are_refused_with_a_reason() -> None:
    data = rawfiles.dng(base())
    with pytest.raises(BadImage, match="RAW"):
        decode(data[: len(data) // 3], MAX)  # truncated mid-mosaic
    with pytest.raises(BadImage, match="too many pixels"):
        decode(rawfiles.dng(Image.new("RGB", (4000, 3000))), 10_000_000)
    with pytest.raises(BadImage, match="not an image"):
        decode(data[:8] + b"\0" * 400, MAX)  # a TIFF header and nothing a decoder knows
    lying = io.BytesIO()  # a preview first and the mosaic's filter tags on the preview: LibRaw makes a 1x1 picture
    with tifffile.TiffWriter(lying) as tif:
        tif.write(np.zeros((48, 64, 3), np.uint8), photometric="rgb", subfiletype=1, subifds=1, metadata=None,
                  extratags=rawfiles.container_tags() + rawfiles.MOSAIC_TAGS)  # fmt: skip
        tif.write(rawfiles.mosaic(base()), photometric=rawfiles.CFA, subfiletype=0, metadata=None)
    with pytest.raises(BadImage, match="RAW"):
        decode(lying.getvalue(), MAX)


def test_a_plain_tiff_is_still_read_by_pillow() -> None:
    got = decode(encode(base(), "TIFF"), MAX)
    assert got.format == "TIFF" and (got.width, got.height) == base().size
    pyramid = io.BytesIO()  # a scanner's 16-bit pyramid: sub-images, but no camera maker: Pillow's, untouched tones
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1))
    with tifffile.TiffWriter(pyramid) as tif:
        tif.write(ramp, subifds=1, metadata=None)
        tif.write(ramp[::2, ::2], subfiletype=1, metadata=None)
    got = decode(pyramid.getvalue(), MAX)
    assert got.format == "TIFF" and abs(np.asarray(got.image).mean() - 127.5) < 2


def test_hostile_raw_and_heic_headers_are_refused_quickly() -> None:
    """Found by a hostile probe: each raised something other than BadImage (a 500), or cost seconds and most of
    a gigabyte for a few kilobytes."""
    import struct
    import time

    small = base().resize((64, 48))
    started = time.monotonic()
    with pytest.raises(BadImage, match="claimed in only"):  # 65 megapixels claimed by a few kilobytes
        decode(rawfiles.claiming(rawfiles.dng(small), 1023, 64000), MAX)
    assert time.monotonic() - started < 5
    odd = io.BytesIO()  # a TIFF whose NewSubfileType is text: read as the TIFF it is, not as a crash
    tifffile.imwrite(odd, np.zeros((48, 64, 3), np.uint8), photometric="rgb", extratags=[(254, "s", 0, "abc", True)],
                     metadata=None)  # fmt: skip
    assert decode(odd.getvalue(), MAX).image.size == (64, 48)
    heic = bytearray(encode(base(), "HEIF", quality=80))  # its header claims 1x1 pixels
    at = heic.find(b"ispe")
    struct.pack_into(">II", heic, at + 8, 1, 1)
    with pytest.raises(BadImage):
        decode(bytes(heic), MAX)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_raw_orientation_gives_the_size_of_the_picture(orientation: int) -> None:
    got = decode(rawfiles.dng(base().resize((128, 96)), orientation=orientation), MAX)
    assert (got.width, got.height) in ((128, 96), (96, 128))
    assert got.image.size == (got.width, got.height)  # the size reported is the picture's, turned or not
