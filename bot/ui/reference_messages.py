"""Texts about reference images: several per request, and the reference tray."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain import TrayAdded, TrayImage
from bot.i18n import _, ngettext
from bot.tray import TooManyReferences
from bot.ui.messages import safe_prompt, timestamp


def option_problem(option: str, problem: str) -> str:
    """A reference option's problem, naming the option when there are several to choose from."""
    return f"`{option}`: {problem}"


def too_many_references(refused: TooManyReferences) -> str:
    total = refused.given + refused.in_tray
    return _(
        "That is {total} reference images ({given} from the `image` options, {in_tray} from "
        "your reference tray); the generator takes at most {limit}. Leave out {excess} of the "
        "`image` options: your tray stays as it is. Nothing was spent."
    ).format(
        total=total,
        given=refused.given,
        in_tray=refused.in_tray,
        limit=refused.limit,
        excess=total - refused.limit,
    )


def _names(images: Sequence[TrayImage]) -> str:
    return ", ".join(f"**{safe_prompt(image.filename, 60)}**" for image in images)


def tray_added(result: TrayAdded, skipped: Sequence[str], capacity: int, expires: float) -> str:
    """The private answer to "Use as reference": what was added, what the tray holds now, and
    until when. `skipped` names the attachments that are no usable image, with why."""
    lines: list[str] = []
    if result.added:
        count = len(result.added)
        lines.append(
            ngettext(
                "Added {count} image to your reference tray: {names}.",
                "Added {count} images to your reference tray: {names}.",
                count,
            ).format(count=count, names=_names(result.added))
        )
    if result.duplicates:
        lines.append(
            ngettext(
                "Already in your tray: {count} image.",
                "Already in your tray: {count} images.",
                result.duplicates,
            ).format(count=result.duplicates)
        )
    if result.no_room:
        lines.append(
            _(
                "Your tray is full ({capacity} images, the most one request can use): "
                "{count} not added."
            ).format(capacity=capacity, count=result.no_room)
        )
    lines.extend(skipped)
    if result.tray:
        lines.append(
            _(
                "Your tray holds {count} of {capacity}: {names}. Your next `/imagine` here uses "
                "them as references, then empties the tray. Each image stays an hour from when "
                "it was added (the oldest until {when})."
            ).format(
                count=len(result.tray),
                capacity=capacity,
                names=_names(result.tray),
                when=timestamp(expires, "t"),
            )
        )
    return "\n".join(lines)


def nothing_to_add(skipped: Sequence[str]) -> str:
    text = _(
        "This message has no image to use as a reference: attach a JPEG, PNG or WebP of at "
        "most 10 MB. Your tray is unchanged."
    )
    return "\n".join((text, *skipped))


def skipped_attachment(filename: str, problem: str) -> str:
    return _("Not added: **{filename}** ({problem}).").format(
        filename=safe_prompt(filename, 60), problem=problem
    )
