"""The kie.ai response parsers, table-driven: every documented shape and the odd ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot import kie
from bot.kie import (
    ImageRequest,
    KieAuthError,
    KieError,
    KieFeatureDisabled,
    KieGenerationRejected,
    KieInsufficientCredits,
    KieMaintenance,
    KieMalformedResponse,
    KieRateLimited,
    KieServerError,
    KieValidationError,
)


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (401, KieAuthError),
        (402, KieInsufficientCredits),
        (404, KieValidationError),
        (422, KieValidationError),
        (429, KieRateLimited),
        (433, KieInsufficientCredits),
        (455, KieMaintenance),
        (500, KieServerError),
        (501, KieGenerationRejected),
        (505, KieFeatureDisabled),
        (599, KieServerError),
    ],
)
def test_envelope_error_codes_map_to_typed_errors(code: int, error_type: type[KieError]) -> None:
    with pytest.raises(error_type) as caught:
        kie.envelope_data({"code": code, "msg": "nope"})
    assert caught.value.code == code
    assert "nope" in str(caught.value)


def test_envelope_accepts_message_spelled_message() -> None:
    with pytest.raises(KieValidationError, match="bad prompt"):
        kie.envelope_data({"code": 422, "message": "bad prompt"})


@pytest.mark.parametrize("body", [None, [], "text", {"msg": "no code"}, {"code": "200"}])
def test_envelope_without_an_integer_code_is_malformed(body: Any) -> None:
    with pytest.raises(KieMalformedResponse):
        kie.envelope_data(body)


@pytest.mark.parametrize(
    ("result_json", "urls"),
    [
        ('{"resultUrls": ["https://x/a.png"]}', ("https://x/a.png",)),
        (
            {"resultUrls": ["https://x/a.png", "http://x/b.png"]},
            ("https://x/a.png", "http://x/b.png"),
        ),
        ("", ()),
        (None, ()),
        ("not json", ()),
        ('{"resultUrls": "https://x/a.png"}', ()),
        ('{"resultUrls": ["file:///etc/passwd", 3]}', ()),
    ],
)
def test_result_urls_are_parsed_defensively(result_json: Any, urls: tuple[str, ...]) -> None:
    assert kie.parse_result_urls(result_json) == urls


def test_task_info_reads_failure_fields() -> None:
    info = kie.parse_task_info(
        {
            "taskId": "t1",
            "state": "fail",
            "failCode": 422,
            "failMsg": "prohibited",
            "resultJson": "",
        }
    )
    assert (info.finished, info.succeeded, info.fail_code, info.fail_message) == (
        True,
        False,
        "422",
        "prohibited",
    )


@pytest.mark.parametrize(
    ("times", "seconds"),
    [
        ({"createTime": 1_700_000_000_000, "completeTime": 1_700_000_012_500}, 12.5),
        ({"createTime": 1_700_000_000_000, "completeTime": None}, None),  # still running
        ({"createTime": 1_700_000_000_000}, None),
        ({"createTime": 1_700_000_012_500, "completeTime": 1_700_000_000_000}, None),  # backwards
        ({"createTime": 0, "completeTime": 90_000_000_000}, None),  # over a day: a clock's error
        ({"createTime": True, "completeTime": 5}, None),
        ({"createTime": "1700000000000", "completeTime": "1700000001000"}, None),
    ],
)
def test_run_seconds_come_from_kies_own_clock(times: dict[str, Any], seconds: float | None) -> None:
    info = kie.parse_task_info({"taskId": "t1", "state": "success", **times})
    assert info.run_seconds == seconds


def test_unknown_state_is_treated_as_still_running() -> None:
    info = kie.parse_task_info({"taskId": "t1", "state": "rendering"})
    assert not info.finished


@pytest.mark.parametrize("data", [None, {}, {"taskId": "t"}, {"state": "success"}])
def test_task_info_without_id_or_state_is_malformed(data: Any) -> None:
    with pytest.raises(KieMalformedResponse):
        kie.parse_task_info(data)


@pytest.mark.parametrize("data", [None, {}, {"taskId": ""}, {"taskId": 5}])
def test_create_answer_without_task_id_is_malformed(data: Any) -> None:
    with pytest.raises(KieMalformedResponse):
        kie.parse_task_id(data)


def test_create_payload_matches_the_documented_schema() -> None:
    payload = kie.build_create_payload(ImageRequest("a red fox", "16:9", "2K"))
    assert payload == {
        "model": "flux-2/flex-text-to-image",
        "input": {
            "prompt": "a red fox",
            "aspect_ratio": "16:9",
            "resolution": "2K",
            "nsfw_checker": True,
        },
    }
    assert "callBackUrl" not in json.dumps(payload)
    unfiltered = ImageRequest("a red fox", nsfw_checker=False)
    assert kie.build_create_payload(unfiltered)["input"]["nsfw_checker"] is False


@pytest.mark.parametrize(
    ("message", "blocked"),
    [
        ("Invalid prompt: prompt contains prohibited content", True),
        ("NSFW content detected", True),
        ("The image was flagged by our safety system", True),
        ("Sensitive content", True),
        ("Internal error", False),
        ("Invalid aspect_ratio", False),
        ("", False),
        (None, False),
    ],
)
def test_safety_filter_failures_are_told_apart_by_their_message(
    message: str | None, blocked: bool
) -> None:
    assert kie.blocked_by_safety_filter(message) is blocked


@pytest.mark.parametrize(
    ("data", "credits"),
    [
        ({"creditsConsumed": 14}, 14.0),
        ({"consumeCredits": 2.5}, 2.5),
        ({"creditsConsumed": "14"}, None),
        ({"creditsConsumed": True}, None),
        ({"creditsConsumed": -1}, None),
        ({"creditsConsumed": 10**9}, None),
        ({}, None),
        ("14", None),
    ],
)
def test_task_costs_are_read_only_when_plausible(data: object, credits: float | None) -> None:
    assert kie.parse_credits(data) == credits


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF89a", "image/gif"),
        (b"<html><body>", None),
        (b"", None),
    ],
)
def test_downloads_are_recognised_by_their_bytes(head: bytes, kind: str | None) -> None:
    assert kie.sniff_image_type(head) == kind


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (b'{"code": 200, "data": {"taskId": "t1", "state": "success"}}', "parses"),
        (json.dumps({"resultUrls": ["https://x.test/a.png"] * 5000}).encode(), "parses"),
        (json.dumps({"prompt": "x" * 900_000}).encode(), "parses"),  # large, but few values
        (b"[" + b"0," * kie.MAX_JSON_VALUES + b"0]", "refused"),
        (b"[" + b"{}," * 30_000 + b"{}]", "refused"),
        (b"[" * 30_000 + b"]" * 30_000, "refused"),
        (b"not json", "refused"),
    ],
    ids=["answer", "5000-urls", "long-string", "many-numbers", "many-objects", "deep", "garbage"],
)
def test_json_with_more_values_than_any_answer_has_is_refused_before_parsing(
    raw: bytes, parsed: str
) -> None:
    if parsed == "parses":
        assert kie.load_json(raw) == json.loads(raw)
    else:
        with pytest.raises(ValueError):
            kie.load_json(raw)
