"""Freed image-sized blocks are reused: an image passing through costs no fresh pages.

Counted in page faults (the kernel's count, not a timing), in a fresh interpreter each time so
that nothing else this process allocated changes the heap's shape.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.memory import keep_freed_memory

# What one image does to memory, a hundred times: chunks read from a socket joined into the
# image, a copy of it for the upload, both freed.
PASSES = """
import os, resource, sys
from bot.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "kept" else None
chunks = [os.urandom(2**16) for _ in range(16)]
def one_image():
    image = b"".join(chunks)
    upload = bytearray(image)
    return len(upload)
one_image()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    one_image()
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)
"""


def faults_per_image(mode: str) -> tuple[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", PASSES, mode], capture_output=True, text=True, timeout=60, check=True
    )
    kept, faults = done.stdout.split()
    return kept, float(faults)


@pytest.mark.skipif(not keep_freed_memory(), reason="not glibc: no thresholds to raise")
def test_an_image_passing_through_costs_no_fresh_pages_once_freed_memory_is_kept() -> None:
    _, faults_before = faults_per_image("default")
    kept, faults_after = faults_per_image("kept")
    assert kept == "True"
    # Without: each megabyte block is fresh pages from the kernel (256 faults a MB).
    assert faults_before > 200, faults_before
    # With: the blocks freed by the previous image are reused.
    assert faults_after < 5, faults_after
