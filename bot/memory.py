"""Keep the bot's memory flat while images stream through it.

Each image passes through the bot as a few ~1 MB buffers. glibc's malloc serves blocks that
large with mmap, but after the first ones are freed it raises that threshold and keeps later
blocks on its heaps, which it rarely gives back: resident memory then grows with every image
handled. Fixing the threshold keeps large buffers on mmap, so freeing one returns it to the OS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
LARGE_BLOCK = 256 * 1024


def return_large_blocks_to_the_os() -> bool:
    """Ask glibc to serve every block over 256 KiB with mmap. False where that is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl, macOS): their allocators behave differently
    ok = bool(mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK))
    log.debug("large allocations use mmap: %s", ok)
    return ok
