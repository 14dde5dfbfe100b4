"""Tests of the image normalisation core: every bad file is built here, in code."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib
from typing import Any, BinaryIO, cast

import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile

from conversations.images import (
    ImageRejected,
    NormalisedImage,
    normalise_image,
    qwen_vl_tokens,
)

UNSUPPORTED_DETAIL = "The file is not a supported image; send a JPEG, PNG, WebP or GIF picture."
CORRUPT_DETAIL = "The image could not be read; the file may be truncated or damaged."

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_colour_near(actual: object, expected: tuple[int, int, int], tolerance: int) -> None:
    assert isinstance(actual, tuple)
    assert len(actual) == 3
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (actual, expected)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def one_bit_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of zeros: tiny on disk, `width * height` pixels once decoded."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = bytes(1 + (width + 7) // 8)  # filter byte, then the packed bits
    compressor = zlib.compressobj(9)
    compressed = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", compressed)
        + png_chunk(b"IEND", b"")
    )


def rejection(source: bytes | BinaryIO, **limits: Any) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        normalise_image(source, **limits)
    return caught.value


class CountingStream:
    """A file object with `length` bytes of zeros, served without ever holding them all."""

    def __init__(self, length: int, max_chunk: int | None = None) -> None:
        self.remaining = length
        self.bytes_read = 0
        self.max_chunk = max_chunk

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self.remaining
        if self.max_chunk is not None:
            size = min(size, self.max_chunk)
        size = min(size, self.remaining)
        self.remaining -= size
        self.bytes_read += size
        return bytes(size)


class TrickleReader:
    """Returns a few bytes per read(), as raw streams and sockets may."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.stream = io.BytesIO(data)
        self.chunk = chunk

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(self.chunk if size < 0 else min(size, self.chunk))


# Refusals


def test_it_rejects_a_text_file_named_jpg() -> None:
    error = rejection(b"Hello, this is my order number 12345, see attached.\n")

    assert error.code == "unsupported_format"
    assert error.detail == UNSUPPORTED_DETAIL
    assert error.http_status == 400


def test_it_rejects_an_svg_with_a_script() -> None:
    svg = (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b"<script>alert(document.cookie)</script><rect width='10' height='10'/></svg>"
    )

    error = rejection(svg)

    assert error.code == "unsupported_format"
    assert error.detail == UNSUPPORTED_DETAIL


def test_it_rejects_a_pdf() -> None:
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"

    error = rejection(pdf)

    assert error.code == "unsupported_format"
    assert error.detail == UNSUPPORTED_DETAIL


@pytest.mark.parametrize("image_format", ["BMP", "TIFF", "ICO", "PPM"])
def test_it_rejects_formats_pillow_reads_but_we_do_not_accept(image_format: str) -> None:
    data = encode(Image.new("RGB", (16, 16), RED), image_format)
    assert Image.open(io.BytesIO(data)).format == image_format

    error = rejection(data)

    assert error.code == "unsupported_format"
    assert error.http_status == 400


def test_it_rejects_an_empty_file() -> None:
    error = rejection(b"")

    assert error.code == "empty_file"
    assert error.detail == "The file is empty."
    assert error.http_status == 400


def test_it_rejects_an_empty_file_object() -> None:
    error = rejection(cast(BinaryIO, io.BytesIO(b"")))

    assert error.code == "empty_file"


def test_it_rejects_bytes_over_the_limit() -> None:
    data = encode(noise_image(64, 64), "PNG")

    error = rejection(data, max_bytes=len(data) - 1)

    assert error.code == "too_large"
    assert error.http_status == 413


def test_it_accepts_bytes_exactly_at_the_limit() -> None:
    data = encode(noise_image(64, 64), "PNG")

    result = normalise_image(data, max_bytes=len(data))

    assert (result.width, result.height) == (64, 64)


def test_it_reads_a_huge_file_object_no_further_than_one_byte_past_the_limit() -> None:
    stream = CountingStream(length=10**12)

    error = rejection(cast(BinaryIO, stream), max_bytes=1000)

    assert error.code == "too_large"
    assert error.detail == "The file is larger than the 1000 bytes limit."
    assert error.http_status == 413
    assert stream.bytes_read == 1001


def test_it_reads_at_most_the_default_limit_plus_one_byte() -> None:
    stream = CountingStream(length=10**12, max_chunk=1024 * 1024)

    error = rejection(cast(BinaryIO, stream))

    assert error.code == "too_large"
    assert error.detail == "The file is larger than the 10 MB limit."
    assert stream.bytes_read == 10 * 1024 * 1024 + 1


def test_it_reads_a_file_object_that_returns_short_reads() -> None:
    data = encode(Image.new("RGB", (40, 30), GREEN), "PNG")

    result = normalise_image(cast(BinaryIO, TrickleReader(data, chunk=7)))

    assert (result.width, result.height) == (40, 30)
    assert_colour_near(decode(result.data).getpixel((20, 15)), GREEN, 8)


def test_it_rejects_a_png_bomb_from_its_header_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = one_bit_png(30_000, 30_000)
    assert len(bomb) < 200_000

    def refuse_to_decode(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the pixels of a decompression bomb were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)

    error = rejection(bomb)

    assert error.code == "too_many_pixels"
    assert error.detail == "The image has more pixels than the limit of 16,777,216 pixels."
    assert error.http_status == 400


def test_it_rejects_a_png_over_its_own_pixel_limit_below_pillows(monkeypatch: pytest.MonkeyPatch) -> None:
    # 56 megapixels: under Pillow's process-wide warning threshold (89 megapixels), over ours.
    bomb = one_bit_png(8000, 7000)

    def refuse_to_decode(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the pixels of a decompression bomb were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)

    error = rejection(bomb)

    assert error.code == "too_many_pixels"
    assert error.detail == "The image is 8000x7000 pixels, more than the limit of 16,777,216 pixels."


def refuse_to_decode(self: ImageFile.ImageFile) -> None:
    raise AssertionError("the pixels of a decompression bomb were decoded")


def test_it_rejects_a_7000_by_7000_png_by_default_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # 49 megapixels in about 200 KB: it cost 420 MB and 3.2 s under the former 50 MP limit.
    bomb = one_bit_png(7000, 7000)
    assert len(bomb) < 250_000
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)

    error = rejection(bomb)

    assert error.code == "too_many_pixels"
    assert error.detail == "The image is 7000x7000 pixels, more than the limit of 16,777,216 pixels."


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_it_accepts_a_12_megapixel_phone_photo_by_default(image_format: str) -> None:
    photo = Image.linear_gradient("L").resize((4032, 3024)).convert("RGB")
    photo.paste(RED, (0, 0, 504, 378))

    result = normalise_image(encode(photo, image_format))

    assert (result.original_width, result.original_height) == (4032, 3024)
    assert (result.width, result.height) == (2048, 1536)
    assert_colour_near(decode(result.data).getpixel((100, 100)), RED, 12)


def decoded_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record the size of every image at the moment its pixels are decoded."""
    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recording_load(self: ImageFile.ImageFile) -> Any:
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return sizes


def test_it_accepts_a_baseline_jpeg_above_the_decoded_limit_decoded_at_reduced_scale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 3 MP against a 1 MP decoded limit: libjpeg decodes it at half scale, 1000x750.
    source = large_photo(2000, 1500)
    sizes = decoded_sizes(monkeypatch)

    result = normalise_image(source, max_side=800, max_input_pixels=1_000_000, max_jpeg_pixels=4_000_000)

    assert set(sizes) == {(1000, 750)}
    assert (result.width, result.height) == (800, 600)
    assert (result.original_width, result.original_height) == (2000, 1500)


def test_it_rejects_a_progressive_jpeg_above_the_decoded_limit_without_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # libjpeg holds every coefficient of a progressive file at full size, whatever the output scale.
    base = Image.linear_gradient("L").resize((2000, 1500)).convert("RGB")
    source = encode(base, "JPEG", progressive=True)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)

    error = rejection(source, max_side=800, max_input_pixels=1_000_000, max_jpeg_pixels=4_000_000)

    assert error.code == "too_many_pixels"
    assert error.detail == "The image is 2000x1500 pixels, more than the limit of 1,000,000 pixels."


def test_it_rejects_a_sequential_jpeg_of_several_scans_above_the_decoded_limit_without_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Separate scans (one per component, say) make libjpeg buffer every coefficient at full size,
    # as for a progressive file. Here the one scan is simply repeated.
    source = large_photo(2000, 1500)
    scan = source[source.index(b"\xff\xda") : -2]
    several_scans = source[:-2] + scan + b"\xff\xd9"
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)

    error = rejection(several_scans, max_side=800, max_input_pixels=1_000_000, max_jpeg_pixels=4_000_000)

    assert error.code == "too_many_pixels"
    assert error.detail == "The image is 2000x1500 pixels, more than the limit of 1,000,000 pixels."


def test_it_does_not_count_the_scan_of_a_jpeg_thumbnail_inside_exif(monkeypatch: pytest.MonkeyPatch) -> None:
    # Phones put a small JPEG (with its own scan) in the EXIF segment of every photo.
    source = large_photo(2000, 1500)
    thumbnail = encode(Image.new("RGB", (160, 120), RED), "JPEG")
    payload = b"Exif\x00\x00" + thumbnail
    with_thumbnail = source[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + source[2:]
    sizes = decoded_sizes(monkeypatch)

    result = normalise_image(
        with_thumbnail, max_side=800, max_input_pixels=1_000_000, max_jpeg_pixels=4_000_000
    )

    assert set(sizes) == {(1000, 750)}
    assert (result.width, result.height) == (800, 600)


def test_it_rejects_a_baseline_jpeg_above_the_jpeg_limit_without_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = large_photo(2000, 1500)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)

    error = rejection(source, max_side=800, max_input_pixels=1_000_000, max_jpeg_pixels=2_999_999)

    assert error.code == "too_many_pixels"
    assert error.detail == "The image is 2000x1500 pixels, more than the limit of 2,999,999 pixels."


def test_it_rejects_a_jpeg_whose_reduced_scale_decode_is_still_above_the_decoded_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A 1200-pixel output side allows only half scale for a 4000x3000 JPEG: 2000x1500 decoded.
    source = large_photo(4000, 3000)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)

    error = rejection(source, max_side=1200, max_input_pixels=1_000_000, max_jpeg_pixels=20_000_000)

    assert error.code == "too_many_pixels"
    assert error.detail == (
        "The image is 4000x3000 pixels; even decoded at 2000x1500 it is more than the limit of "
        "1,000,000 pixels."
    )


def test_it_applies_the_decoded_limit_to_a_jpeg_read_without_draft(monkeypatch: pytest.MonkeyPatch) -> None:
    source = large_photo(2000, 1500)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)

    error = rejection(source, max_input_pixels=1_000_000, max_jpeg_pixels=4_000_000, _use_draft=False)

    assert error.detail == "The image is 2000x1500 pixels, more than the limit of 1,000,000 pixels."


def test_it_names_the_jpeg_limit_when_pillows_own_guard_refuses_a_jpeg_header() -> None:
    # A baseline JPEG header declaring 20000x10000 pixels, beyond Pillow's process-wide guard.
    header = encode(Image.new("RGB", (16, 16), RED), "JPEG")
    start = header.index(b"\xff\xc0") + 5
    huge = header[:start] + struct.pack(">HH", 10000, 20000) + header[start + 4 :]

    error = rejection(huge, max_jpeg_pixels=60_000_000)

    assert error.code == "too_many_pixels"
    assert error.detail == "The image has more pixels than the limit of 60,000,000 pixels."


def test_it_applies_the_max_input_pixels_argument() -> None:
    data = encode(Image.new("RGB", (100, 100), RED), "PNG")

    error = rejection(data, max_input_pixels=9_999)

    assert error.code == "too_many_pixels"
    assert error.detail == "The image is 100x100 pixels, more than the limit of 9,999 pixels."
    assert normalise_image(data, max_input_pixels=10_000).width == 100


def test_it_does_not_change_pillows_global_pixel_limit() -> None:
    before = Image.MAX_IMAGE_PIXELS

    rejection(one_bit_png(8000, 7000))
    normalise_image(encode(Image.new("RGB", (10, 10), RED), "PNG"))

    assert before == Image.MAX_IMAGE_PIXELS


def test_it_rejects_a_truncated_jpeg() -> None:
    data = encode(noise_image(256, 256), "JPEG", quality=90)

    error = rejection(data[: len(data) // 2])

    assert error.code == "corrupt_image"
    assert error.detail == CORRUPT_DETAIL
    assert error.http_status == 400


def test_it_rejects_a_truncated_jpeg_without_draft() -> None:
    data = encode(noise_image(256, 256), "JPEG", quality=90)

    with pytest.raises(ImageRejected) as caught:
        normalise_image(data[: len(data) // 2], _use_draft=False)

    assert caught.value.code == "corrupt_image"


def test_it_rejects_a_jpeg_cut_inside_its_header_as_corrupt() -> None:
    data = encode(noise_image(64, 64), "JPEG")

    error = rejection(data[:12])

    assert error.code == "corrupt_image"
    assert error.detail == CORRUPT_DETAIL


def test_it_rejects_a_png_with_broken_image_data() -> None:
    header = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    broken = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"this is not a zlib stream at all")
        + png_chunk(b"IEND", b"")
    )

    error = rejection(broken)

    assert error.code == "corrupt_image"
    assert error.detail == CORRUPT_DETAIL


def test_it_rejects_a_png_with_a_bad_header_checksum() -> None:
    data = bytearray(encode(Image.new("RGB", (16, 16), RED), "PNG"))
    data[29] ^= 0xFF  # a byte of the IHDR checksum

    error = rejection(bytes(data))

    assert error.code == "corrupt_image"


def test_it_rejects_a_truncated_webp() -> None:
    data = encode(noise_image(128, 128), "WEBP", quality=80)

    error = rejection(data[:40])

    assert error.code == "corrupt_image"


# Accepted images


def exif_rotated_photo() -> bytes:
    """A 600x400 stored JPEG, orientation 6 (display rotated 90° clockwise), red top-left corner."""
    stored = Image.new("RGB", (600, 400), BLUE)
    stored.paste(RED, (0, 0, 150, 100))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "ExampleCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (31.0, 14.0, 3.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (121.0, 28.0, 15.0)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return encode(stored, "JPEG", quality=95, exif=exif, icc_profile=icc, comment=b"secret note")


def test_it_turns_an_exif_rotated_photo_upright() -> None:
    source = exif_rotated_photo()

    result = normalise_image(source)

    assert (result.width, result.height) == (400, 600)
    assert (result.original_width, result.original_height) == (400, 600)
    output = decode(result.data)
    assert output.size == (400, 600)
    # Rotating 90° clockwise moves the stored top-left corner to the top right.
    assert_colour_near(output.getpixel((350, 50)), RED, 12)
    assert_colour_near(output.getpixel((50, 50)), BLUE, 12)
    assert_colour_near(output.getpixel((350, 550)), BLUE, 12)


def test_it_turns_an_exif_rotated_photo_upright_without_draft() -> None:
    result = normalise_image(exif_rotated_photo(), max_side=300, _use_draft=False)

    assert (result.width, result.height) == (200, 300)
    assert_colour_near(decode(result.data).getpixel((175, 25)), RED, 12)


def test_it_turns_an_exif_rotated_photo_upright_when_decoded_at_reduced_scale() -> None:
    # 1/2 DCT scaling applies: 600x400 -> 300x200 is exactly the stored-orientation target.
    result = normalise_image(exif_rotated_photo(), max_side=300)

    assert (result.width, result.height) == (200, 300)
    output = decode(result.data)
    assert_colour_near(output.getpixel((175, 25)), RED, 12)
    assert_colour_near(output.getpixel((25, 25)), BLUE, 12)


def test_it_strips_exif_gps_icc_and_comments() -> None:
    source = exif_rotated_photo()
    original = Image.open(io.BytesIO(source))
    assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo) != {}
    assert {"exif", "icc_profile", "comment"} <= set(original.info)

    result = normalise_image(source)

    for data in (result.data, result.thumbnail):
        output = Image.open(io.BytesIO(data))
        assert dict(output.getexif()) == {}
        assert output.getexif().get_ifd(ExifTags.IFD.GPSInfo) == {}
        assert "exif" not in output.info
        assert "icc_profile" not in output.info
        assert "comment" not in output.info
        assert "xmp" not in output.info
        assert b"Exif\x00\x00" not in data
        assert b"ExampleCam" not in data
        assert b"secret note" not in data


def test_it_converts_a_cmyk_jpeg_to_the_right_rgb_colours() -> None:
    cmyk = Image.new("CMYK", (128, 64), (0, 255, 255, 0))  # red
    cmyk.paste((0, 0, 0, 128), (64, 0, 128, 64))  # half black: mid grey
    source = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(source)).mode == "CMYK"

    result = normalise_image(source)

    output = decode(result.data)
    assert output.mode == "RGB"
    assert_colour_near(output.getpixel((20, 32)), RED, 10)
    assert_colour_near(output.getpixel((108, 32)), (127, 127, 127), 10)


def test_it_scales_a_16_bit_png_to_8_bits_keeping_relative_brightness() -> None:
    row = b"".join(struct.pack("<H", x * 257) for x in range(256))
    gradient = Image.frombytes("I;16", (256, 1), row).resize((256, 32), Image.Resampling.NEAREST)
    source = encode(gradient, "PNG")
    assert Image.open(io.BytesIO(source)).mode == "I;16"

    result = normalise_image(source)

    output = decode(result.data)
    assert output.mode == "RGB"
    samples = [output.getpixel((x, 16)) for x in (8, 64, 128, 192, 247)]
    for x, sample in zip((8, 64, 128, 192, 247), samples, strict=True):
        assert_colour_near(sample, (x, x, x), 6)


def test_it_composites_transparent_pixels_onto_white() -> None:
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (32, 0, 64, 64))  # opaque blue
    source = encode(rgba, "PNG")

    result = normalise_image(source)

    output = decode(result.data)
    assert output.mode == "RGB"
    assert_colour_near(output.getpixel((8, 32)), WHITE, 6)
    assert_colour_near(output.getpixel((56, 32)), BLUE, 10)


def test_it_composites_a_half_transparent_pixel_onto_white() -> None:
    source = encode(Image.new("RGBA", (32, 32), (0, 0, 0, 128)), "PNG")

    result = normalise_image(source)

    assert_colour_near(decode(result.data).getpixel((16, 16)), (127, 127, 127), 4)


def test_it_composites_a_transparent_palette_png_onto_white() -> None:
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 0, 0, 0, 255, 0])
    palette.paste(1, (16, 0, 32, 32))
    source = encode(palette, "PNG", transparency=0)
    assert Image.open(io.BytesIO(source)).mode == "P"

    result = normalise_image(source)

    output = decode(result.data)
    assert_colour_near(output.getpixel((4, 16)), WHITE, 8)
    assert_colour_near(output.getpixel((28, 16)), GREEN, 10)


def test_it_takes_the_first_frame_of_an_animated_gif() -> None:
    frames = [Image.new("RGB", (48, 48), colour) for colour in (RED, GREEN, BLUE)]
    source = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(source)), "n_frames", 1) == 3

    result = normalise_image(source)

    assert result.original_format == "GIF"
    assert (result.width, result.height) == (48, 48)
    assert_colour_near(decode(result.data).getpixel((24, 24)), RED, 10)


def test_it_takes_the_first_picture_of_a_multi_picture_jpeg() -> None:
    first, second = Image.new("RGB", (64, 48), RED), Image.new("RGB", (64, 48), GREEN)
    source = encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(source)).format == "MPO"

    result = normalise_image(source)

    assert result.original_format == "JPEG"
    assert_colour_near(decode(result.data).getpixel((32, 24)), RED, 10)


def test_it_accepts_a_webp_with_transparency() -> None:
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgba.paste((0, 255, 0, 255), (32, 0, 64, 64))
    source = encode(rgba, "WEBP", lossless=True)

    result = normalise_image(source)

    assert result.original_format == "WEBP"
    output = decode(result.data)
    assert_colour_near(output.getpixel((8, 32)), WHITE, 6)
    assert_colour_near(output.getpixel((56, 32)), GREEN, 10)


def large_photo(width: int = 4000, height: int = 3000) -> bytes:
    base = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    base.paste(RED, (0, 0, width // 8, height // 8))
    return encode(base, "JPEG", quality=85)


def test_it_scales_a_4000_by_3000_jpeg_to_a_long_side_of_2048() -> None:
    result = normalise_image(large_photo())

    assert (result.width, result.height) == (2048, 1536)
    assert (result.original_width, result.original_height) == (4000, 3000)
    assert result.original_format == "JPEG"
    output = decode(result.data)
    assert output.size == (2048, 1536)
    assert_colour_near(output.getpixel((100, 100)), RED, 12)


def test_it_scales_a_portrait_photo_by_its_long_side() -> None:
    result = normalise_image(large_photo(1500, 4000))

    assert (result.width, result.height) == (768, 2048)


def test_it_gives_the_same_size_with_and_without_draft() -> None:
    source = large_photo()

    with_draft = normalise_image(source, max_side=1000)
    without_draft = normalise_image(source, max_side=1000, _use_draft=False)

    assert (with_draft.width, with_draft.height) == (1000, 750)
    assert (without_draft.width, without_draft.height) == (1000, 750)
    assert_colour_near(decode(with_draft.data).getpixel((50, 50)), RED, 12)


def test_it_enforces_max_output_pixels() -> None:
    result = normalise_image(large_photo(), max_output_pixels=1_000_000)

    assert (result.width, result.height) == (1154, 866)
    assert result.width * result.height <= 1_000_000


def test_it_enforces_max_output_pixels_on_a_square_image() -> None:
    source = encode(Image.new("RGB", (1500, 1500), RED), "PNG")

    result = normalise_image(source, max_output_pixels=1_000_000)

    assert (result.width, result.height) == (1000, 1000)


def test_it_does_not_enlarge_a_small_image() -> None:
    source = encode(Image.new("RGB", (100, 50), GREEN), "PNG")

    result = normalise_image(source)

    assert (result.width, result.height) == (100, 50)
    assert (result.thumbnail_width, result.thumbnail_height) == (100, 50)
    assert result.original_format == "PNG"


def test_it_outputs_a_jpeg_with_a_matching_sha256() -> None:
    result = normalise_image(exif_rotated_photo())

    assert isinstance(result, NormalisedImage)
    assert result.content_type == "image/jpeg"
    assert result.extension == "jpg"
    assert decode(result.data).format == "JPEG"
    assert decode(result.data).mode == "RGB"
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()


def test_it_makes_a_thumbnail_no_longer_than_320_pixels() -> None:
    result = normalise_image(large_photo())

    assert (result.thumbnail_width, result.thumbnail_height) == (320, 240)
    thumbnail = decode(result.thumbnail)
    assert thumbnail.format == "JPEG"
    assert thumbnail.size == (320, 240)


def test_it_makes_an_upright_thumbnail() -> None:
    result = normalise_image(exif_rotated_photo(), thumbnail_side=120)

    assert (result.thumbnail_width, result.thumbnail_height) == (80, 120)
    assert_colour_near(decode(result.thumbnail).getpixel((70, 10)), RED, 16)


def test_it_is_deterministic() -> None:
    source = exif_rotated_photo()

    first = normalise_image(source)
    second = normalise_image(io.BytesIO(source))

    assert first.sha256 == second.sha256
    assert first.data == second.data
    assert first.thumbnail == second.thumbnail


def test_it_estimates_qwen_vl_tokens_per_28_pixel_patch() -> None:
    assert qwen_vl_tokens(28, 28) == 1
    assert qwen_vl_tokens(29, 28) == 2
    assert qwen_vl_tokens(2048, 1536) == 74 * 55
    assert qwen_vl_tokens(1, 1) == 1
