"""Texts about reference images: several per request, and the reference tray."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain import TrayAdded, TrayImage
from bot.tray import TooManyReferences
from bot.ui.messages import safe_prompt, timestamp


def option_problem(option: str, problem: str) -> str:
    """A reference option's problem, naming the option when there are several to choose from."""
    return f"`{option}`: {problem}"


def too_many_references(refused: TooManyReferences) -> str:
    total = refused.given + refused.in_tray
    return (
        f"That is {total} reference images ({refused.given} from the `image` options, "
        f"{refused.in_tray} from your reference tray); the generator takes at most "
        f"{refused.limit}. Leave out {total - refused.limit} of the `image` options: your tray "
        "stays as it is. Nothing was spent."
    )


def _names(images: Sequence[TrayImage]) -> str:
    return ", ".join(f"**{safe_prompt(image.filename, 60)}**" for image in images)


def tray_added(result: TrayAdded, skipped: Sequence[str], capacity: int, expires: float) -> str:
    """The private answer to "Use as reference": what was added, what the tray holds now, and
    until when. `skipped` names the attachments that are no usable image, with why."""
    lines: list[str] = []
    if result.added:
        count = len(result.added)
        images = "1 image" if count == 1 else f"{count} images"
        lines.append(f"Added {images} to your reference tray: {_names(result.added)}.")
    if result.duplicates:
        lines.append(
            "Already in your tray: 1 image."
            if result.duplicates == 1
            else f"Already in your tray: {result.duplicates} images."
        )
    if result.no_room:
        lines.append(
            f"Your tray is full ({capacity} images, the most one request can use): "
            f"{result.no_room} not added."
        )
    lines.extend(skipped)
    if result.tray:
        lines.append(
            f"Your tray holds {len(result.tray)} of {capacity}: {_names(result.tray)}. Your "
            "next `/imagine` here uses them as references, then empties the tray. Each image "
            f"stays an hour from when it was added (the oldest until {timestamp(expires, 't')})."
        )
    return "\n".join(lines)


def nothing_to_add(skipped: Sequence[str]) -> str:
    text = (
        "This message has no image to use as a reference: attach a JPEG, PNG or WebP of at "
        "most 10 MB. Your tray is unchanged."
    )
    return "\n".join((text, *skipped))


def skipped_attachment(filename: str, problem: str) -> str:
    return f"Not added: **{safe_prompt(filename, 60)}** ({problem})."
