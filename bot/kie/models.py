"""What the kie.ai client speaks: the models, their options and limits, requests and answers."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

TEXT_TO_IMAGE_MODEL = "flux-2/flex-text-to-image"
IMAGE_TO_IMAGE_MODEL = "flux-2/flex-image-to-image"
AspectRatio = Literal["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "auto"]
Resolution = Literal["1K", "2K"]
ASPECT_RATIOS: tuple[AspectRatio, ...] = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3")
AUTO_ASPECT_RATIO: AspectRatio = "auto"  # image-to-image only: match the reference image
RESOLUTIONS: tuple[Resolution, ...] = ("1K", "2K")
PROMPT_MIN_LENGTH = 3
PROMPT_MAX_LENGTH = 5000
# Image-to-image references: JPEG, PNG or WebP, at most 10 MB each (documented; decimal
# megabytes, the stricter reading), kept by kie.ai's file host for 3 days.
REFERENCE_TYPES = ("image/jpeg", "image/png", "image/webp")
REFERENCE_MAX_BYTES = 10_000_000
REFERENCE_LIFETIME = 3 * 24 * 3600.0

TaskState = Literal["waiting", "queuing", "generating", "success", "fail"]
FINAL_STATES = frozenset({"success", "fail"})


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    aspect_ratio: AspectRatio = "1:1"
    resolution: Resolution = "1K"
    # Reference images on kie.ai's file host; any makes it an image-to-image request.
    input_urls: tuple[str, ...] = ()
    # kie.ai's own content filter ("defaults to false": off unless asked for). The bot always
    # sends it, true unless the operator, the server and the channel all allow adult content.
    nsfw_checker: bool = True

    @property
    def model(self) -> str:
        return IMAGE_TO_IMAGE_MODEL if self.input_urls else TEXT_TO_IMAGE_MODEL


@dataclass(frozen=True)
class TaskInfo:
    task_id: str
    state: str
    result_urls: tuple[str, ...] = ()
    fail_code: str | None = None
    fail_message: str | None = None
    credits: float | None = None  # what the task cost, where kie.ai says so

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
