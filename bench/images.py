"""Benchmark of image preprocessing on a 12-megapixel phone-style JPEG.

Run from the repository root: `python bench/images.py [--runs 10] [--no-write]`. It prints a
table and replaces the `## Image preprocessing` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import io
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ on the path, not the repository root.
sys.path.insert(0, str(REPOSITORY_ROOT))

import PIL  # noqa: E402
from PIL import ExifTags, Image, ImageDraw, ImageFilter  # noqa: E402

from conversations.images import normalise_image, qwen_vl_tokens  # noqa: E402

BENCHMARKS_PATH = REPOSITORY_ROOT / "docs" / "benchmarks.md"
SECTION_TITLE = "## Image preprocessing"
PHOTO_SIZE = (4000, 3000)
# The platform's defaults (ATTACHMENT_MAX_SIDE, ATTACHMENT_MAX_PIXELS in cs_platform/settings.py).
PLATFORM_MAX_SIDE = 2048
PLATFORM_MAX_PIXELS = 2048 * 28 * 28
# (label, long-side limit, pixel limit): the platform's defaults first, then the long-side limit
# alone (where libjpeg must decode a 4000-pixel photo in full), then smaller, model-friendly sizes.
CONFIGURATIONS = (
    ("platform default: 2048 px, 1,605,632 px", PLATFORM_MAX_SIDE, PLATFORM_MAX_PIXELS),
    ("2048 px, no pixel limit", 2048, 2048 * 2048),
    ("1280 px", 1280, 2048 * 2048),
    ("768 px", 768, 2048 * 2048),
)


@dataclass(frozen=True)
class Timing:
    """Milliseconds of repeated runs of one configuration."""

    runs_ms: list[float]

    @property
    def minimum(self) -> float:
        """Fastest run."""
        return min(self.runs_ms)

    @property
    def median(self) -> float:
        """Median run."""
        return statistics.median(self.runs_ms)

    @property
    def mean(self) -> float:
        """Mean run."""
        return statistics.fmean(self.runs_ms)


def make_photo() -> bytes:
    """A 4000x3000 JPEG with gradients, shapes and sensor-like noise, stored sideways (orientation 6)."""
    width, height = PHOTO_SIZE
    horizontal = Image.linear_gradient("L").rotate(90).resize(PHOTO_SIZE)
    vertical = Image.linear_gradient("L").resize(PHOTO_SIZE)
    radial = Image.radial_gradient("L").resize(PHOTO_SIZE)
    photo = Image.merge("RGB", (horizontal, radial, vertical))
    draw = ImageDraw.Draw(photo)
    for index in range(40):
        left, top = (index * 97) % width, (index * 61) % height
        colour = ((index * 53) % 256, (index * 101) % 256, (index * 31) % 256)
        draw.ellipse((left, top, left + 300, top + 220), fill=colour, outline=(0, 0, 0), width=6)
        draw.rectangle((top, left % height, top + 180, left % height + 40), fill=(255 - colour[0], 40, 90))
    photo = photo.filter(ImageFilter.GaussianBlur(2))
    # Sensor noise keeps the JPEG from compressing to nothing, like a real photo.
    noise = Image.merge("RGB", [Image.effect_noise(PHOTO_SIZE, 18) for _ in range(3)])
    photo = Image.blend(photo, noise, 0.18)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "BenchCam"
    exif[ExifTags.Base.Model] = "12MP"
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=92, exif=exif)
    return buffer.getvalue()


def measure(function: Callable[[], object], runs: int) -> Timing:
    """Time `runs` calls after one warm-up call."""
    return measure_pair(function, function, runs)[0]


def measure_pair(
    first: Callable[[], object], second: Callable[[], object], runs: int
) -> tuple[Timing, Timing]:
    """Time two functions in alternation, so that drift in a shared machine's load hits both alike."""
    first()
    second()
    first_ms: list[float] = []
    second_ms: list[float] = []
    for _ in range(runs):
        for function, runs_ms in ((first, first_ms), (second, second_ms)):
            started = time.perf_counter()
            function()
            runs_ms.append((time.perf_counter() - started) * 1000)
    return Timing(first_ms), Timing(second_ms)


def decoded_size(photo: bytes, target: tuple[int, int]) -> tuple[int, int]:
    """The size libjpeg decodes the photo at when `draft` is asked for `target` (stored orientation)."""
    with Image.open(io.BytesIO(photo)) as image:
        image.draft("RGB", target)
        return image.size


def stage_timings(photo: bytes, runs: int) -> dict[str, Timing]:
    """Where the time goes for a full-size decode: full and 1/2-scale decode, resize, encode."""

    def decode(scale_target: tuple[int, int] | None) -> Image.Image:
        with Image.open(io.BytesIO(photo)) as image:
            if scale_target is not None:
                image.draft("RGB", scale_target)
            image.load()
            return image.copy()

    full = decode(None)
    resized = full.resize((2048, 1536), Image.Resampling.LANCZOS, reducing_gap=3.0)

    def encode() -> bytes:
        buffer = io.BytesIO()
        resized.save(buffer, format="JPEG", quality=85, optimize=True)
        return buffer.getvalue()

    return {
        "decode at full scale (4000x3000)": measure(lambda: decode(None), runs),
        "decode at 1/2 scale (2000x1500)": measure(lambda: decode((2000, 1500)), runs),
        "LANCZOS resize 4000x3000 -> 2048x1536": measure(
            lambda: full.resize((2048, 1536), Image.Resampling.LANCZOS, reducing_gap=3.0), runs
        ),
        "JPEG encode 2048x1536 (q85, optimize)": measure(encode, runs),
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_section(photo: bytes, runs: int) -> str:
    """Run every configuration and return the Markdown section."""
    rows: list[str] = []
    for label, max_side, max_pixels in CONFIGURATIONS:
        result = normalise_image(photo, max_side=max_side, max_output_pixels=max_pixels)
        # The photo is stored sideways: the stored-orientation target is the output transposed.
        decoded_width, decoded_height = decoded_size(photo, (result.height, result.width))
        with_draft, without_draft = measure_pair(
            functools.partial(normalise_image, photo, max_side=max_side, max_output_pixels=max_pixels),
            functools.partial(
                normalise_image, photo, max_side=max_side, max_output_pixels=max_pixels, _use_draft=False
            ),
            runs,
        )
        rows.append(
            f"| {label} "
            f"| {result.width}x{result.height} "
            f"| {decoded_width}x{decoded_height} (1/{PHOTO_SIZE[0] // decoded_width}) "
            f"| {with_draft.minimum:.0f} / {with_draft.median:.0f} / {with_draft.mean:.0f} "
            f"| {without_draft.minimum:.0f} / {without_draft.median:.0f} / {without_draft.mean:.0f} "
            f"| {without_draft.median / with_draft.median:.2f}x "
            f"| {len(result.data) / 1024:.0f} KB "
            f"| {len(result.thumbnail) / 1024:.1f} KB "
            f"| {qwen_vl_tokens(result.width, result.height)} |"
        )
        print(rows[-1], flush=True)
    stages = stage_timings(photo, runs)
    stage_rows = [
        f"| {name} | {timing.minimum:.0f} / {timing.median:.0f} / {timing.mean:.0f} |"
        for name, timing in stages.items()
    ]
    print("\n".join(stage_rows))
    today = datetime.datetime.now(tz=datetime.UTC).date().isoformat()
    return "\n".join(
        [
            SECTION_TITLE,
            "",
            "`normalise_image` (conversations/images.py) on a synthetic 12-megapixel phone photo: "
            f"4000x3000 JPEG (quality 92, {len(photo) / 1024 / 1024:.1f} MB) with gradients, shapes and "
            "sensor-like noise, stored sideways with EXIF orientation 6, so the output is upright "
            "portrait. Each figure is min / median / mean milliseconds over "
            f"{runs} runs after one warm-up, single thread; the runs with and without draft alternate, "
            "so that load from other processes hits both alike. Produced by `python bench/images.py`.",
            "",
            f"- Date: {today}",
            f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs visible)",
            f"- Python {platform.python_version()}, Pillow {PIL.__version__}",
            "",
            "| limits | output | decoded with draft | with draft (ms) | without draft (ms) "
            "| speed-up (median) | output size | thumbnail | Qwen-VL tokens |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            "libjpeg can only decode at 1/1, 1/2, 1/4 or 1/8 scale, and `draft` never goes below the "
            "requested size. With the platform's defaults the pixel limit (one Qwen-VL token per 28x28 "
            "patch, at most 2048 tokens) makes the output 1463x1097 or smaller, so a 12-megapixel photo "
            "is decoded at 1/2 scale. With the long-side limit alone (2048) a 4000-pixel side needs a "
            "full decode and draft changes nothing (any difference in that row is noise). Qwen-VL tokens "
            "are one per 28x28 patch (`qwen_vl_tokens`), before any server-side `max_pixels` resizing.",
            "",
            "Where the time goes for 2048 px with no pixel limit, decoded in full (min / median / mean ms):",
            "",
            "| stage | ms |",
            "| --- | --- |",
            *stage_rows,
            "",
        ]
    )


def replace_section(document: str, section: str) -> str:
    """Replace the image section of the document (up to the next `## ` heading), or append it."""
    pattern = re.compile(rf"^{re.escape(SECTION_TITLE)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(document):
        return pattern.sub(lambda _: section.rstrip("\n") + "\n\n", document, count=1).rstrip("\n") + "\n"
    if not document.strip():
        return "# Benchmarks\n\n" + section
    return document.rstrip("\n") + "\n\n" + section


def main() -> None:
    """Run the benchmark, print it, and update docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per configuration")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    arguments = parser.parse_args()

    photo = make_photo()
    print(f"photo: {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG, {len(photo) / 1024 / 1024:.2f} MB")
    section = build_section(photo, arguments.runs)
    if arguments.no_write:
        print(section)
        return
    document = BENCHMARKS_PATH.read_text() if BENCHMARKS_PATH.exists() else ""
    BENCHMARKS_PATH.parent.mkdir(parents=True, exist_ok=True)
    BENCHMARKS_PATH.write_text(replace_section(document, section))
    print(f"updated {BENCHMARKS_PATH.relative_to(REPOSITORY_ROOT)}")


if __name__ == "__main__":
    main()
