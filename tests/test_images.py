"""Re-encoding oversize images in the worker process: same result as in-process, off the loop."""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from collections.abc import AsyncIterator
from concurrent.futures.process import BrokenProcessPool

import pytest
from PIL import Image

from bot.images import Reencoder, fit_image


def noisy_png(side: int) -> bytes:
    image = Image.effect_noise((side, side), 120).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """The start of a PNG that says how large it is (all Pillow reads before decoding)."""
    header = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(header) + _chunk(b"IDAT" + bytes(5000))


def _chunk(body: bytes) -> bytes:
    return struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))


@pytest.fixture
async def reencoder() -> AsyncIterator[Reencoder]:
    reencoder = Reencoder()
    yield reencoder
    await reencoder.close()


async def test_the_worker_is_another_process(reencoder: Reencoder) -> None:
    assert await reencoder.call(os.getpid) != os.getpid()


async def test_an_oversize_image_comes_back_as_the_same_jpeg_as_in_process(
    reencoder: Reencoder,
) -> None:
    big = noisy_png(500)
    limit = len(big) // 3
    fitted = await reencoder.fit(big, "image/png", limit, "imagine-7")
    assert fitted is not None
    assert fitted == fit_image(big, "image/png", limit, "imagine-7")
    assert fitted.reencoded and fitted.filename == "imagine-7.jpg"
    assert fitted.original_size == len(big) and len(fitted.data) <= limit


async def test_an_image_that_fits_is_passed_through_untouched(reencoder: Reencoder) -> None:
    small = noisy_png(40)
    fitted = await reencoder.fit(small, "image/png", len(small), "imagine-8")
    assert fitted is not None
    assert (fitted.data, fitted.filename, fitted.reencoded) == (small, "imagine-8.png", False)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(5000), "cannot re-encode an oversized image"),
        (png_header(8000, 5001), "not re-encoding a 8000x5001 image (over 40000000 pixels)"),
    ],
    ids=["not-an-image", "too-many-pixels"],
)
async def test_an_image_that_cannot_be_reencoded_gets_a_link_and_a_log_line(
    reencoder: Reencoder, caplog: pytest.LogCaptureFixture, data: bytes, why: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.images"):
        assert await reencoder.fit(data, "image/png", 1000) is None
    assert why in caplog.text


async def test_a_dead_worker_costs_one_image_and_the_next_gets_a_fresh_worker(
    reencoder: Reencoder,
) -> None:
    first = await reencoder.call(os.getpid)
    with pytest.raises(BrokenProcessPool):
        await reencoder.call(os._exit, 1)
    assert await reencoder.call(os.getpid) not in (first, os.getpid())
    big = noisy_png(300)
    assert await reencoder.fit(big, "image/png", len(big) // 2) is not None
