"""What the kie.ai client speaks: the models, their options and limits, requests and answers."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

# The request is the domain's own: the same value the command built and the ledger stored.
from bot.domain import (
    ASPECT_RATIOS,
    AUTO_ASPECT_RATIO,
    MODELS,
    RESOLUTIONS,
    AspectRatio,
    ImageRequest,
    Model,
    Resolution,
)

__all__ = [
    "ASPECT_RATIOS",
    "AUTO_ASPECT_RATIO",
    "MODELS",
    "RESOLUTIONS",
    "AspectRatio",
    "ImageRequest",
    "Model",
    "Resolution",
]

TEXT_TO_IMAGE_MODEL = "flux-2/flex-text-to-image"
IMAGE_TO_IMAGE_MODEL = "flux-2/flex-image-to-image"
PRO_TEXT_TO_IMAGE_MODEL = "flux-2/pro-text-to-image"
PRO_IMAGE_TO_IMAGE_MODEL = "flux-2/pro-image-to-image"
# kie.ai's name for each (model, image-to-image): the same endpoint and fields for all four.
_KIE_MODELS: dict[tuple[Model, bool], str] = {
    ("flex", False): TEXT_TO_IMAGE_MODEL,
    ("flex", True): IMAGE_TO_IMAGE_MODEL,
    ("pro", False): PRO_TEXT_TO_IMAGE_MODEL,
    ("pro", True): PRO_IMAGE_TO_IMAGE_MODEL,
}
PROMPT_MIN_LENGTH = 3
PROMPT_MAX_LENGTH = 5000
# Image-to-image references: JPEG, PNG or WebP, at most 10 MB each (documented; decimal
# megabytes, the stricter reading), kept by kie.ai's file host for 3 days.
REFERENCE_TYPES = ("image/jpeg", "image/png", "image/webp")
REFERENCE_MAX_BYTES = 10_000_000
REFERENCE_LIFETIME = 3 * 24 * 3600.0
# kie.ai deletes generated media after 14 days (its direct links lapse after about a day, but
# /api/v1/common/download-url gives a fresh one while the file exists).
RESULT_LIFETIME = 14 * 24 * 3600.0

TaskState = Literal["waiting", "queuing", "generating", "success", "fail"]
FINAL_STATES = frozenset({"success", "fail"})


def model_for(request: ImageRequest) -> str:
    """The Flux-2 model that draws `request`: its own (flex or pro), image-to-image when it
    has a reference."""
    return _KIE_MODELS[(request.model, bool(request.input_urls))]


@dataclass(frozen=True)
class TaskInfo:
    task_id: str
    state: str
    result_urls: tuple[str, ...] = ()
    fail_code: str | None = None
    fail_message: str | None = None
    credits: float | None = None  # what the task cost, where kie.ai says so
    # createTime to completeTime on kie.ai's own clock, once finished (where it says so)
    run_seconds: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "success"


@dataclass(frozen=True)
class DownloadedImage:
    data: bytes
    content_type: str
    url: str


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded, jittered exponential backoff for rejections that are safe to retry."""

    attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 10.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff = min(self.max_delay, self.base_delay * 2.0**attempt)
        return backoff * random.uniform(0.5, 1.0)
