"""Making a finished image fit Discord's upload limit. CPU work: call `fit_image` off the loop."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
_JPEG_QUALITIES = (90, 80, 70)
_MAX_SHRINK_STEPS = 8
# kie.ai's 2K images are about 4 megapixels. Anything far larger is not decoded at all: a
# 179-megapixel "image" would take 1.9 GB and seconds of CPU to re-encode.
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class FittedImage:
    data: bytes
    filename: str
    original_size: int
    reencoded: bool


def extension_for(content_type: str) -> str:
    return _EXTENSIONS.get(content_type.lower(), "png")


def fit_image(
    data: bytes, content_type: str, limit: int, stem: str = "imagine"
) -> FittedImage | None:
    """Return the image as is if it fits in `limit` bytes, else a JPEG re-encode that fits.

    Tries lower JPEG qualities first, then smaller sizes. None when nothing fits (or the bytes are
    not an image Pillow can read), so the caller can fall back to a link.
    """
    if len(data) <= limit:
        return FittedImage(data, f"{stem}.{extension_for(content_type)}", len(data), False)
    try:
        with Image.open(io.BytesIO(data)) as source:
            # Opening reads only the header: the size is known before anything is decoded.
            if source.width * source.height > MAX_PIXELS:
                log.warning(
                    "not re-encoding a %dx%d image (over %d pixels)",
                    source.width,
                    source.height,
                    MAX_PIXELS,
                )
                return None
            image = source.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        log.warning("cannot re-encode an oversized image: %s", error)
        return None
    for _ in range(_MAX_SHRINK_STEPS):
        for quality in _JPEG_QUALITIES:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=quality, optimize=True)
            if buffer.tell() <= limit:
                return FittedImage(buffer.getvalue(), f"{stem}.jpg", len(data), True)
        width, height = image.size
        if width < 64 or height < 64:
            break
        image = image.resize((int(width * 0.75), int(height * 0.75)), Image.Resampling.LANCZOS)
    return None
