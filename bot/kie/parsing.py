"""Pure functions from kie.ai's JSON to the client's types: no I/O, so tests call them directly."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bot.kie.errors import ERRORS_BY_CODE, KieMalformedResponse, KieServerError
from bot.kie.models import ImageRequest, TaskInfo, model_for

# kie.ai's answers and callbacks hold a few dozen values. json.loads holds the GIL for its whole
# run (a thread would not help) and a megabyte of tiny values ("[[],[],...]") takes 200 ms or
# more to parse: a body with more values than this is refused before it is parsed.
MAX_JSON_VALUES = 20_000
_VALUE_SEPARATORS = (b",", b"[", b"{")


def load_json(raw: bytes) -> Any:
    """`json.loads`, for a body of a bounded number of values; ValueError for more.

    Counting separators is a few memchr-like scans (under a millisecond for 1 MB), and bounds
    the parse to a few milliseconds whatever the shape. Separators inside strings count too,
    which only makes the bound stricter.
    """
    values = 0
    for separator in _VALUE_SEPARATORS:
        values += raw.count(separator)
        if values > MAX_JSON_VALUES:
            raise ValueError(f"JSON with more than {MAX_JSON_VALUES} values")
    return json.loads(raw)


def build_create_payload(request: ImageRequest, callback_url: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": model_for(request),
        "input": {
            "prompt": request.prompt,
            "aspect_ratio": request.aspect_ratio,
            "resolution": request.resolution,
            "nsfw_checker": request.nsfw_checker,
        },
    }
    if not request.uploaded:
        raise ValueError("a reference image is not on kie.ai's file host yet")
    if request.input_urls:
        payload["input"]["input_urls"] = list(request.input_urls)
    if callback_url:
        payload["callBackUrl"] = callback_url
    return payload


def envelope_data(body: Any) -> Any:
    """Return `data` from a success envelope, or raise the error the envelope describes."""
    if not isinstance(body, Mapping) or not isinstance(body.get("code"), int):
        raise KieMalformedResponse("kie.ai answered without a status code")
    code: int = body["code"]
    if code == 200:
        return body.get("data")
    message = str(body.get("msg") or body.get("message") or "")[:300]
    error_type = ERRORS_BY_CODE.get(code, KieServerError)
    raise error_type(f"kie.ai answered {code}: {message}", code=code, reason=message or None)


def parse_task_id(data: Any) -> str:
    task_id = data.get("taskId") if isinstance(data, Mapping) else None
    if not isinstance(task_id, str) or not task_id:
        raise KieMalformedResponse("createTask answered without a taskId")
    return task_id


def parse_upload_url(data: Any) -> str:
    """The link kie.ai's file host gives an uploaded file (`downloadUrl`; `fileUrl` as well)."""
    url = None
    if isinstance(data, Mapping):
        url = data.get("downloadUrl") or data.get("fileUrl")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise KieMalformedResponse("the file upload answered without a download URL")
    return url


def parse_result_urls(result_json: Any) -> tuple[str, ...]:
    """`resultJson` is documented as a JSON string, but be ready for an object or nothing."""
    if isinstance(result_json, str):
        if not result_json.strip():
            return ()
        try:
            result_json = json.loads(result_json)
        except ValueError:
            return ()
    if not isinstance(result_json, Mapping):
        return ()
    urls = result_json.get("resultUrls")
    if not isinstance(urls, list):
        return ()
    return tuple(u for u in urls if isinstance(u, str) and u.startswith(("http://", "https://")))


# Words in kie.ai's failure messages that mean its safety filter refused (e.g. "Invalid prompt:
# prompt contains prohibited content"); kie.ai documents no failure code for it.
_SAFETY_WORDS = (
    "nsfw",
    "prohibited",
    "sensitive",
    "safety",
    "unsafe",
    "inappropriate",
    "content policy",
    "moderation",
    "flagged",
    "explicit",
)


def blocked_by_safety_filter(message: str | None) -> bool:
    """Whether a failure message says kie.ai's content filter blocked the request or image."""
    text = (message or "").lower()
    return any(word in text for word in _SAFETY_WORDS)


def parse_credits(data: Any) -> float | None:
    """What a task cost, from a callback or task record (`creditsConsumed`, older pages
    `consumeCredits`); None when absent or implausible."""
    if not isinstance(data, Mapping):
        return None
    for key in ("creditsConsumed", "consumeCredits", "credits_consumed"):
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) if 0 <= value <= 100_000 else None
    return None


def parse_task_info(data: Any) -> TaskInfo:
    if not isinstance(data, Mapping):
        raise KieMalformedResponse("recordInfo answered without task data")
    task_id = data.get("taskId")
    state = data.get("state")
    if not isinstance(task_id, str) or not isinstance(state, str):
        raise KieMalformedResponse("recordInfo answered without taskId or state")
    fail_code = data.get("failCode")
    fail_message = data.get("failMsg")
    return TaskInfo(
        task_id=task_id,
        state=state,
        result_urls=parse_result_urls(data.get("resultJson")),
        fail_code=str(fail_code) if fail_code not in (None, "") else None,
        fail_message=str(fail_message) if fail_message not in (None, "") else None,
        credits=parse_credits(data),
        run_seconds=parse_run_seconds(data),
    )


# A task that ran longer than a day is a clock's mistake, not a duration to learn from.
_LONGEST_RUN_MS = 24 * 3600 * 1000


def parse_run_seconds(data: Mapping[str, Any]) -> float | None:
    """How long the task took on kie.ai (`completeTime` − `createTime`, both ms epoch), or None
    when either is missing or the difference is implausible."""
    created, completed = data.get("createTime"), data.get("completeTime")
    if type(created) is not int or type(completed) is not int:  # not bool, not float
        return None
    took = completed - created
    return took / 1000 if 0 < took <= _LONGEST_RUN_MS else None


IMAGE_OR_BINARY = ("image/", "application/octet-stream", "binary/octet-stream")
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_image_type(head: bytes) -> str | None:
    """The image type the first bytes show; storage servers often say octet-stream."""
    for magic, content_type in _MAGIC:
        if head.startswith(magic):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None
