"""Making a finished image fit Discord's upload limit.

`fit_image` is the pure CPU work. `Reencoder` runs it in a worker process: Pillow holds the GIL
for long stretches while it decodes and encodes (a 4096x4096 PNG stalled the event loop over
600 ms from a thread), so a thread is not enough to keep the bot answering meanwhile.
"""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
_JPEG_QUALITIES = (90, 80, 70)
_MAX_SHRINK_STEPS = 8
# kie.ai's 2K images are about 4 megapixels. Anything far larger is not decoded at all: a
# 179-megapixel "image" would take 1.9 GB and seconds of CPU to re-encode.
MAX_PIXELS = 40_000_000
# Oversize images handed to the worker at once, over all jobs: one is re-encoded while the next
# waits in the pipe, so memory stays bounded however many arrive at once.
REENCODES_AT_ONCE = 2

_T = TypeVar("_T")


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
    fitted = _fit(data, content_type, limit, stem)
    if isinstance(fitted, str):
        log.warning("%s", fitted)
        return None
    return fitted


def _fit(data: bytes, content_type: str, limit: int, stem: str) -> FittedImage | str | None:
    """`fit_image` without logging (it may run in a worker process): a str says why not."""
    if len(data) <= limit:
        return FittedImage(data, f"{stem}.{extension_for(content_type)}", len(data), False)
    try:
        with Image.open(io.BytesIO(data)) as source:
            # Opening reads only the header: the size is known before anything is decoded.
            if source.width * source.height > MAX_PIXELS:
                return (
                    f"not re-encoding a {source.width}x{source.height} image "
                    f"(over {MAX_PIXELS} pixels)"
                )
            image = source.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        return f"cannot re-encode an oversized image: {error}"
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


def _fit_file(source: str, target: str, content_type: str, limit: int, stem: str) -> str | None:
    """In the worker: fit the image in file `source`, write the result to `target`.

    None when written, else why not (one sentence for the log).
    """
    fitted = _fit(Path(source).read_bytes(), content_type, limit, stem)
    if isinstance(fitted, FittedImage):
        Path(target).write_bytes(fitted.data)
        return None
    return fitted or "an oversized image does not fit even at its smallest"


def _spill(data: bytes) -> Path:
    """Write `data` to a new private temporary folder; returns the folder."""
    folder = Path(tempfile.mkdtemp(prefix="imagine-reencode-"))
    (folder / "source").write_bytes(data)
    return folder


class Reencoder:
    """Fits oversize images in one worker process, started on first use, shared by every job.

    The image travels to the worker, and the JPEG back, through a temporary file written and read
    in a thread: pickling 50 MB through the worker's pipe would be one copy made while holding
    the GIL (90 ms on a small machine). An image that already fits is returned at once, without
    the worker. If the worker dies (the kernel's OOM killer, a crash in a decoder), that image
    gets a link instead and the next one starts a fresh worker.
    """

    def __init__(self, *, at_once: int = REENCODES_AT_ONCE, workers: int = 1) -> None:
        self._slots = asyncio.Semaphore(at_once)
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def fit(
        self, data: bytes, content_type: str, limit: int, stem: str = "imagine"
    ) -> FittedImage | None:
        if len(data) <= limit:
            return fit_image(data, content_type, limit, stem)
        async with self._slots:
            fitted = None
            try:
                folder = await asyncio.to_thread(_spill, data)
            except OSError as error:  # no room for temporary files: a link it is
                refusal: str | None = f"cannot re-encode an oversized image: {error}"
            else:
                try:
                    source, target = folder / "source", folder / "fitted"
                    refusal = await self.call(
                        _fit_file, str(source), str(target), content_type, limit, stem
                    )
                    if refusal is None:
                        fitted = FittedImage(
                            await asyncio.to_thread(target.read_bytes),
                            f"{stem}.jpg",
                            len(data),
                            True,
                        )
                except BrokenProcessPool:
                    refusal = "the re-encoding worker died; the image goes out as a link"
                except OSError as error:
                    refusal = f"cannot re-encode an oversized image: {error}"
                finally:
                    await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
        if refusal is not None:
            log.warning("%s", refusal)
        return fitted

    async def call(self, function: Callable[..., _T], *args: object) -> _T:
        """Run `function(*args)` in the worker (picklable, module-level functions only)."""
        pool = self._pool
        if pool is None:
            # spawn, not fork: a forked copy of the bot would share its sockets and its memory.
            context = multiprocessing.get_context("spawn")
            pool = self._pool = ProcessPoolExecutor(self._workers, mp_context=context)
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, function, *args)
        except BrokenProcessPool:
            if self._pool is pool:
                self._pool = None  # the next call starts a fresh worker
            pool.shutdown(wait=False)
            raise

    async def close(self) -> None:
        """Stop the worker, after the re-encode it is doing (if any); a no-op if never used."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
