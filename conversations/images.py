"""Validation and normalisation of customer-uploaded images, independent of Django models.

Every picture a customer attaches passes through `normalise_image` before it is stored or shown
to the vision-language model: it is checked (format, bytes, declared pixels) before anything is
decoded, decoded as cheaply as possible, turned upright, flattened to RGB on white, scaled down
and re-encoded as a metadata-free JPEG with a thumbnail.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Final

from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_DECODED_PIXELS",
    "DEFAULT_MAX_JPEG_PIXELS",
    "ImageRejected",
    "NormalisedImage",
    "normalise_image",
    "qwen_vl_tokens",
]

# Pillow's names for the only decoders we let near customer bytes. Anything else (BMP, TIFF,
# PSD, ICO, PDF, SVG...) is refused before a plugin for it can parse the file.
ACCEPTED_FORMATS: Final[tuple[str, ...]] = ("JPEG", "PNG", "WEBP", "GIF")

OUTPUT_CONTENT_TYPE: Final = "image/jpeg"
OUTPUT_EXTENSION: Final = "jpg"

# Pixels decoded into memory at once (4096x4096): a 12 MP phone photo (4000x3000, 4032x3024) or a
# 5K screenshot passes, at roughly 130 MB of peak memory for a PNG; a 7000x7000 PNG (420 MB) does not.
DEFAULT_MAX_DECODED_PIXELS: Final = 4096 * 4096
# Declared pixels of a baseline JPEG, decoded at 1/2, 1/4 or 1/8 scale: a 48 or 50 MP phone photo
# (8160x6120) is decoded at 4080x3060 and passes.
DEFAULT_MAX_JPEG_PIXELS: Final = 50_000_000

# Qwen2-VL and Qwen2.5-VL/Qwen3-VL turn each 28x28 pixel patch into one visual token.
QWEN_VL_PATCH_SIDE: Final = 28

# Signatures of the accepted formats: a file that starts like one of them but that Pillow cannot
# identify is a damaged image, not a file of another kind.
_JPEG_SIGNATURE: Final = b"\xff\xd8\xff"
_ACCEPTED_SIGNATURES: Final[tuple[bytes, ...]] = (
    _JPEG_SIGNATURE,
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
)

# EXIF orientation value -> the transposition that makes the picture upright; the same table
# as ImageOps.exif_transpose, applied by hand so that it runs on the already-reduced image.
_ORIENTATION_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG: Final = 0x0112

_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WHITE: Final = (255, 255, 255)

# Resize with a cheap integer box reduction first while the image is more than this many times
# the target; Pillow documents 3.0 as indistinguishable from a plain LANCZOS resize.
_REDUCING_GAP: Final = 3.0

# Exceptions Pillow raises from malformed data: bad headers and chunks (SyntaxError, struct.error),
# truncation (OSError, EOFError), inconsistent sizes or decoder states (ValueError, IndexError).
_DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


class ImageRejected(Exception):
    """An upload that is not an acceptable image; `code` and `detail` go to the client as they are.

    Codes: unsupported_format, empty_file, too_large (HTTP 413), too_many_pixels, corrupt_image.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.http_status = 413 if code == "too_large" else 400


@dataclass(frozen=True)
class NormalisedImage:
    """An upright, RGB, metadata-free JPEG made from an upload, with its thumbnail.

    `original_*` describe the upload: its Pillow format name and its size as displayed
    (after EXIF orientation), so that it compares with `width` and `height`.
    """

    data: bytes
    content_type: str
    extension: str
    width: int
    height: int
    sha256: str
    thumbnail: bytes
    thumbnail_width: int
    thumbnail_height: int
    original_format: str
    original_width: int
    original_height: int


def qwen_vl_tokens(width: int, height: int) -> int:
    """Estimate the visual tokens Qwen-VL spends on an image: one per 28x28 pixel patch."""
    return math.ceil(width / QWEN_VL_PATCH_SIDE) * math.ceil(height / QWEN_VL_PATCH_SIDE)


def normalise_image(
    source: BinaryIO | bytes,
    *,
    max_bytes: int = 10 * 1024 * 1024,
    max_side: int = 2048,
    max_output_pixels: int = 2048 * 2048,
    max_input_pixels: int = DEFAULT_MAX_DECODED_PIXELS,
    max_jpeg_pixels: int = DEFAULT_MAX_JPEG_PIXELS,
    thumbnail_side: int = 320,
    jpeg_quality: int = 85,
    _use_draft: bool = True,
) -> NormalisedImage:
    """Check an uploaded image and re-encode it upright, scaled down, as RGB JPEG without metadata.

    A file object is read from its current position, never more than `max_bytes + 1` bytes.
    `max_input_pixels` caps the pixels decoded into memory at once; `max_jpeg_pixels` caps the
    declared size of a baseline JPEG, which libjpeg decodes at a reduced scale (the decoded size
    must still be within `max_input_pixels`).
    Raises ImageRejected when the upload is not an acceptable image.
    """
    data = _read_limited(source, max_bytes)
    if not data:
        raise ImageRejected("empty_file", "The file is empty.")
    if len(data) > max_bytes:
        raise ImageRejected("too_large", f"The file is larger than the {_describe_bytes(max_bytes)} limit.")

    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            original_format = "JPEG" if image.format == "MPO" else str(image.format)
            stored_width, stored_height = image.size
            # The declared size is known from the header alone: refuse a decompression bomb here,
            # before a single pixel is decoded. PNG, GIF and WebP decode at full size; so does a
            # JPEG of several scans (progressive, or sequential with separate scans) in effect, as
            # libjpeg then keeps every DCT coefficient of the image in memory (3 to 6 bytes a
            # pixel) whatever the output scale.
            scaled_jpeg = (
                _use_draft
                and original_format == "JPEG"
                and not image.info.get("progressive")
                and not _jpeg_has_several_scans(data)
            )
            declared_limit = max_jpeg_pixels if scaled_jpeg else max_input_pixels
            if stored_width * stored_height > declared_limit:
                raise _too_many_pixels(stored_width, stored_height, declared_limit)

            # The size limits are symmetric in width and height, so the scale computed on the
            # stored (possibly sideways) size is the one the upright picture needs too.
            target_size = _fit_size(stored_width, stored_height, max_side, max_output_pixels)
            if _use_draft and original_format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling) when the target allows:
                # the largest saving on big photos. It never goes below the requested size.
                image.draft("RGB", target_size)
            # After draft() the size is the one libjpeg will decode to; for every other format it
            # is the declared size, already checked.
            if image.width * image.height > max_input_pixels:
                raise _too_many_pixels(stored_width, stored_height, max_input_pixels, decoded=image.size)
            image.load()
            orientation = _orientation(image)
            picture = _to_rgb(image)
            if picture.size != target_size:
                picture = picture.resize(target_size, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)
            elif picture is image:
                # Closing the file also frees the decoded pixels of the image it opened.
                picture = image.copy()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own process-wide guard fired first (only for sizes far above ours), before the
        # format was known: name the limit for what the file starts like.
        limit = max_jpeg_pixels if data.startswith(_JPEG_SIGNATURE) else max_input_pixels
        raise ImageRejected(
            "too_many_pixels", f"The image has more pixels than the limit of {limit:,} pixels."
        ) from error
    except UnidentifiedImageError as error:
        if data.startswith(_ACCEPTED_SIGNATURES) or _is_webp(data):
            raise _corrupt() from error
        raise ImageRejected(
            "unsupported_format", "The file is not a supported image; send a JPEG, PNG, WebP or GIF picture."
        ) from error
    except _DECODE_ERRORS as error:
        raise _corrupt() from error

    # Transposing after the resize moves a fraction of the pixels a full-size rotation would.
    if orientation in _ORIENTATION_TRANSPOSE:
        picture = picture.transpose(_ORIENTATION_TRANSPOSE[orientation])
    # Derived images copy `info`; clearing it keeps EXIF (GPS), XMP, ICC and comments out of the output.
    picture.info.clear()
    encoded = _encode_jpeg(picture, jpeg_quality)

    thumbnail_size = _fit_size(picture.width, picture.height, thumbnail_side, thumbnail_side * thumbnail_side)
    thumbnail = picture
    if thumbnail_size != picture.size:
        thumbnail = picture.resize(thumbnail_size, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)

    swapped = orientation in (5, 6, 7, 8)
    return NormalisedImage(
        data=encoded,
        content_type=OUTPUT_CONTENT_TYPE,
        extension=OUTPUT_EXTENSION,
        width=picture.width,
        height=picture.height,
        sha256=hashlib.sha256(encoded).hexdigest(),
        thumbnail=_encode_jpeg(thumbnail, jpeg_quality),
        thumbnail_width=thumbnail.width,
        thumbnail_height=thumbnail.height,
        original_format=original_format,
        original_width=stored_height if swapped else stored_width,
        original_height=stored_width if swapped else stored_height,
    )


def _read_limited(source: BinaryIO | bytes, max_bytes: int) -> bytes:
    """Return the source's bytes, reading a file object no further than one byte past the limit."""
    if isinstance(source, bytes):
        return source
    # One byte more than allowed is enough to know the file is too large; a client must not be
    # able to make the server buffer an arbitrarily large upload.
    remaining = max_bytes + 1
    chunks: list[bytes] = []
    while remaining > 0:
        # Raw streams may return fewer bytes than asked for before the end of the file.
        chunk = source.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _fit_size(width: int, height: int, max_side: int, max_pixels: int) -> tuple[int, int]:
    """Largest size with the same aspect ratio within both the long-side and the area limits."""
    long_side, short_side = max(width, height), min(width, height)
    if long_side > max_side:
        # Integer arithmetic, rounded half up, so that 4000x3000 gives exactly 2048x1536.
        short_side = max(1, (2 * short_side * max_side + long_side) // (2 * long_side))
        long_side = max_side
    if long_side * short_side > max_pixels:
        scale = math.sqrt(max_pixels / (long_side * short_side))
        long_side = max(1, math.floor(long_side * scale))
        short_side = max(1, math.floor(short_side * scale))
        # Guard against floating-point rounding landing one pixel over the area limit.
        while long_side * short_side > max_pixels and long_side > 1:
            long_side -= 1
    return (long_side, short_side) if width >= height else (short_side, long_side)


def _orientation(image: Image.Image) -> int:
    """The image's EXIF orientation (1 when missing or unreadable)."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except _DECODE_ERRORS:
        # A damaged EXIF block must not cost the customer their picture.
        return 1
    return value if isinstance(value, int) else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB, compositing transparency onto white."""
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        # 16-bit greyscale PNG: a plain convert("L") clips everything above 255 to white,
        # so scale 0..65535 down to 0..255 first.
        image = image.convert("I").point(lambda value: value / 257).convert("L")
        # A tRNS grey level is in 16-bit units and no longer matches any 8-bit pixel.
        image.info.pop("transparency", None)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flattened = Image.new("RGB", rgba.size, _WHITE)
        flattened.paste(rgba, mask=rgba.getchannel("A"))
        return flattened
    # CMYK (Adobe-inverted JPEGs are already un-inverted by Pillow), L, P, 1 and YCbCr.
    return image if image.mode == "RGB" else image.convert("RGB")


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """Encode as an optimised baseline JPEG with no metadata; the same pixels give the same bytes."""
    buffer = io.BytesIO()
    # Only `quality`, `optimize` and `subsampling` are passed: with no exif=, icc_profile=,
    # comment= or dpi= arguments and an empty `info`, Pillow writes no metadata segments.
    image.save(buffer, format="JPEG", quality=quality, optimize=True, subsampling="4:2:0")
    return buffer.getvalue()


def _jpeg_has_several_scans(data: bytes) -> bool:
    """Whether the first picture of a JPEG has more than one scan (SOS), walking its markers.

    Segments are skipped by their length, so a JPEG inside EXIF (a phone's thumbnail) is not counted;
    the walk stops at the first picture's end (EOI), before the other pictures of an MPO file.
    """
    position, scans, end = 2, 0, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return False  # not at a marker: a damaged file, left to the decoder to refuse
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            position += 2
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker != 0xDA:
            continue
        scans += 1
        if scans > 1:
            return True
        # Entropy-coded data follows the scan header up to the next marker: 0xFF followed by
        # anything but a stuffed zero or a restart marker.
        while True:
            position = data.find(b"\xff", position)
            if position < 0 or position + 1 >= end:
                return False
            following = data[position + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:
                position += 2
            elif following == 0xFF:
                position += 1
            else:
                break
    return False


def _is_webp(data: bytes) -> bool:
    """Whether the bytes start with a RIFF/WEBP header."""
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _describe_bytes(count: int) -> str:
    """A byte count for people: "10 MB", "512 KB", "900 bytes"."""
    for unit, size in (("MB", 1024 * 1024), ("KB", 1024)):
        if count >= size:
            return f"{count / size:g} {unit}"
    return f"{count} bytes"


def _too_many_pixels(
    width: int, height: int, max_pixels: int, *, decoded: tuple[int, int] | None = None
) -> ImageRejected:
    """The refusal for a picture whose declared (or reduced-scale decoded) size is above a pixel limit."""
    if decoded is not None and decoded != (width, height):
        return ImageRejected(
            "too_many_pixels",
            f"The image is {width}x{height} pixels; even decoded at {decoded[0]}x{decoded[1]} it is more "
            f"than the limit of {max_pixels:,} pixels.",
        )
    return ImageRejected(
        "too_many_pixels",
        f"The image is {width}x{height} pixels, more than the limit of {max_pixels:,} pixels.",
    )


def _corrupt() -> ImageRejected:
    """The refusal for an accepted format whose data cannot be decoded."""
    return ImageRejected(
        "corrupt_image", "The image could not be read; the file may be truncated or damaged."
    )
