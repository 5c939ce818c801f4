"""Every text and embed the bot shows, as pure functions (easy to test, easy to restyle).

Prompts are user input: they are escaped (markdown and mentions) and only ever placed in embeds,
and every message is also sent with allowed mentions off, so a prompt can neither ping anyone nor
break the layout.
"""

from __future__ import annotations

import re
from datetime import datetime

import discord

from bot.admission import Refusal, RefusalReason
from bot.batches import BatchOutcome
from bot.domain import Job, JobState, MemberDefaults, Model, Origin, parse_model
from bot.jobs import OPERATOR_PROBLEMS, Failure, FailureKind, Finished, Phase, Progress
from bot.kie import PROMPT_MAX_LENGTH, PROMPT_MIN_LENGTH
from bot.kie.credits import Balance
from bot.options import ACCEPTED, OptionKey, OptionsError, Problem
from bot.quota import BudgetStatus, Costs, QuotaStatus
from bot.runqueue import HeldBy, Wait

COLOUR_WORKING = discord.Colour.blurple()
COLOUR_DONE = discord.Colour.green()
COLOUR_FAILED = discord.Colour.red()
_DESCRIPTION_LIMIT = 4096


def safe_prompt(prompt: str, limit: int = 1000) -> str:
    """The prompt as inert text, cut to `limit` characters: no markdown, no mentions, and
    nothing clickable or rendered (links, masked links, invites, timestamps, command, channel
    and emoji mentions), so a member cannot make the bot show a link under its own name."""
    text = discord.utils.escape_markdown(prompt, ignore_links=False)
    text = discord.utils.escape_mentions(text)
    text = _SCHEME.sub(f"\\1:{_ZWSP}", text)  # https://… is no link
    text = _INVITE.sub(f"\\1.{_ZWSP}", text)  # nor discord.gg/… (invites link without one)
    text = text.replace("<", f"<{_ZWSP}")  # nor <t:…>, </cmd:id>, <#id>, <:emoji:id>
    if len(text) > limit:
        text = text[: limit - 1].rstrip("\\") + "…"
    return text


_ZWSP = "\u200b"  # zero-width space: invisible, but Discord no longer sees a link or a tag
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(?=//)")
_INVITE = re.compile(r"(?i)\b(discord(?:app)?)\.(?=(?:gg|com|me|io|li)\b)")


def timestamp(moment: float | datetime, style: str = "R") -> str:
    """A Discord timestamp; clients render `R` as a live "12 seconds ago" clock."""
    seconds = moment.timestamp() if isinstance(moment, datetime) else moment
    return f"<t:{int(seconds)}:{style}>"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def units(count: int) -> str:
    return f"{count} unit" if count == 1 else f"{count} units"


def job_options(job: Job) -> str:
    line = f"{job.image.aspect_ratio} · {job.image.resolution}"
    count = max(len(job.image.reference_urls), len(job.image.input_urls))
    if count > 1:
        return f"{line} · from {count} reference images"
    return f"{line} · from a reference image" if job.image.image_to_image else line


def model_name(model: Model) -> str:
    return f"Flux-2 {model}"


_ORIGIN_TEXT = {
    Origin.REROLL: "🎲 Re-roll",
    Origin.VARY: "🔀 Variation",
    Origin.EDIT: "✏️ Edited image",
}


def _prompt_embed(title: str, prompt: str, colour: discord.Colour) -> discord.Embed:
    return discord.Embed(
        title=title, description=safe_prompt(prompt, _DESCRIPTION_LIMIT), colour=colour
    )


# --- /imagine -----------------------------------------------------------------------------------

# The one line a member waiting on an outage of kie.ai gets (its circuit breaker is open).
KIE_DOWN_NOTE = "Your image will start by itself when kie.ai is back; nothing is charged twice."

_PHASE_TEXT = {
    Phase.WAITING: "⏳ Waiting for a free slot",
    Phase.QUEUED: "🕒 Queued",
    Phase.GENERATING: "🎨 Generating",
    Phase.PAUSED: "⏸️ Paused by the bot's operator",
    Phase.KIE_DOWN: "⚠️ kie.ai is having trouble",
}


def progress_embed(progress: Progress, job: Job, images: str | None = None) -> discord.Embed:
    embed = _prompt_embed(f"{_PHASE_TEXT[progress.phase]}…", job.image.prompt, COLOUR_WORKING)
    embed.add_field(name="Options", value=job_options(job))
    if images is not None:
        embed.add_field(name="Images", value=images)
    embed.add_field(name="Started", value=timestamp(progress.started_at))
    if progress.wait is not None:
        text = queue_text(progress.wait, progress.position, progress.turn_at)
        embed.add_field(name="Queue", value=text, inline=False)
    if progress.phase is Phase.PAUSED:
        reason = f"Reason: {safe_prompt(progress.note, 300)}\n" if progress.note else ""
        embed.add_field(
            name="Your image is not lost",
            value=f"{reason}It is still reserved and starts by itself when generation resumes.",
            inline=False,
        )
    if progress.phase is Phase.KIE_DOWN:
        embed.add_field(name="Your units are kept", value=KIE_DOWN_NOTE, inline=False)
    if progress.wait is None and progress.position is not None and progress.turn_at is not None:
        # A live timestamp counts down in the client, so the line needs no edits to move.
        embed.add_field(
            name="In line",
            value=f"#{progress.position} · your turn {timestamp(progress.turn_at)}",
        )
    return embed


def queue_text(wait: Wait, position: int | None = None, starts_at: float | None = None) -> str:
    """The place in line (the server's and kie.ai's together) and a live "starts in …"."""
    if wait.held_by is HeldBy.MEMBER_LIMIT:
        why = f"you can have {wait.limit} running at once; it starts when one of yours finishes"
    else:
        why = f"this server runs {wait.limit} at once; it starts when a place frees up"
    place = f"Position **{position or wait.position}** in line"
    if starts_at is not None:
        # A live timestamp counts down in the client: the estimate needs no edits to stay fresh.
        place += f" · expected {timestamp(starts_at)}"
    return f"{place} · {why}. Nothing is charged twice."


def result_embed(finished: Finished, filename: str, note: str | None = None) -> discord.Embed:
    job = finished.job
    title = "🖼️ Your image is ready"
    if finished.shown_again:
        title = SHOWN_AGAIN_TITLE
    elif job.origin in _ORIGIN_TEXT:
        title = f"🖼️ {_ORIGIN_TEXT[job.origin]} is ready"
    embed = _prompt_embed(title, job.image.prompt, COLOUR_DONE)
    embed.add_field(name="Options", value=job_options(job))
    embed.add_field(name="Model", value=model_name(job.image.model))
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    if finished.shown_again:
        embed.add_field(name="Made", value=timestamp(job.created_at, "f"))
    else:
        embed.add_field(name="Took", value=duration(finished.elapsed))
    quota = finished.quota
    embed.add_field(name="Quota left today", value=f"{quota.remaining} of {quota.limit}")
    if note:
        embed.add_field(name="Note", value=note, inline=False)
    if filename:
        embed.set_image(url=f"attachment://{filename}")
    return embed


def batch_progress_text(counts: dict[Phase, int]) -> str:
    """Where a batch's images are: "1 generating · 3 waiting"."""
    names = {
        Phase.WAITING: "waiting",
        Phase.PAUSED: "paused",
        Phase.KIE_DOWN: "waiting for kie.ai",
        Phase.QUEUED: "queued",
        Phase.GENERATING: "generating",
    }
    parts = [f"{n} {names[phase]}" for phase, n in counts.items() if n]
    return " · ".join(parts) or "starting"


def batch_result_embed(outcome: BatchOutcome, notes: list[str]) -> discord.Embed:
    """One message for a request's images: they are its attachments (numbered in order)."""
    last = outcome.finished[-1]
    job = last.job
    made = len(outcome.finished)
    title = f"🖼️ Your {made} images are ready" if made > 1 else "🖼️ Your image is ready"
    embed = _prompt_embed(title, job.image.prompt, COLOUR_DONE)
    embed.add_field(name="Options", value=job_options(job))
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    embed.add_field(name="Took", value=duration(max(f.elapsed for f in outcome.finished)))
    quota = last.quota
    if outcome.failed:
        quota_text = (
            f"{outcome.failed} of {len(outcome.jobs)} could not be made; their "
            f"{units(outcome.refunded_units)} went back. {quota.remaining} of {quota.limit} "
            "left today."
        )
    else:
        quota_text = f"{quota.remaining} of {quota.limit}"
    embed.add_field(name="Quota left today", value=quota_text, inline=False)
    embed.add_field(
        name="Buttons",
        value="**Vary N** makes a variation of image N; **Use N** posts image N on its own.",
        inline=False,
    )
    if notes:
        embed.add_field(name="Note", value="\n".join(notes)[:1024], inline=False)
    return embed


def batch_failure_embed(outcome: BatchOutcome, failure: Failure | None) -> discord.Embed:
    """None of a request's images could be made: the usual failure, for all the units."""
    prompt = outcome.jobs[0].image.prompt
    if failure is not None:
        return failure_embed(failure, prompt, outcome.refunded_units)
    embed = _prompt_embed("❌ No image this time", prompt, COLOUR_FAILED)
    embed.add_field(
        name="Quota", value=f"Your {units(outcome.refunded_units)} went back.", inline=False
    )
    return embed


def resized_note(original_size: int, sent_size: int, limit: int, link: str) -> str:
    return (
        f"The original ({megabytes(original_size)}) is over this server's "
        f"{megabytes(limit)} upload limit, so this is a smaller JPEG ({megabytes(sent_size)}). "
        f"[Full-size original]({link}) (the link expires within a day)."
    )


def link_only_note(original_size: int, limit: int, link: str) -> str:
    return (
        f"The image ({megabytes(original_size)}) is over this server's {megabytes(limit)} upload "
        f"limit and could not be shrunk to fit: [open it here]({link}) (the link expires within "
        "a day)."
    )


def megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


_FAILURE_TEXT = {
    FailureKind.PROMPT_REJECTED: "kie.ai rejected this prompt or its options.",
    FailureKind.BUSY: "kie.ai is too busy right now. Please try again in a minute.",
    FailureKind.MAINTENANCE: "kie.ai is under maintenance. Please try again later.",
    FailureKind.GENERATION_FAILED: "The generation failed at kie.ai.",
    FailureKind.FEATURE_DISABLED: "This image model is switched off at kie.ai for now.",
    FailureKind.OUT_OF_CREDITS: "The bot's kie.ai account is out of credits.",
    FailureKind.MISCONFIGURED: "The bot's kie.ai API key was refused.",
    FailureKind.CONTENT_FILTERED: "kie.ai's safety filter blocked this image; try rewording.",
    FailureKind.TIMED_OUT: "kie.ai took too long to answer, so the bot gave up waiting.",
    FailureKind.UNREACHABLE: "The bot could not reach kie.ai. Please try again later.",
    FailureKind.SUBMIT_UNCERTAIN: (
        "The connection to kie.ai broke while sending your request, so the bot did not send it "
        "again (that could have made a second, paid image). Please try again."
    ),
    FailureKind.INTERRUPTED: (
        "The bot restarted while sending your request to kie.ai and cannot tell whether it "
        "arrived, so it did not send it again (that could have made a second, paid image). "
        "Please try again."
    ),
    FailureKind.BAD_RESPONSE: "kie.ai sent an answer the bot could not read.",
    FailureKind.DOWNLOAD_FAILED: "The image was made, but the bot could not download it.",
    FailureKind.DELIVERY_FAILED: "The image was made, but Discord would not accept it.",
    FailureKind.REFERENCE_FAILED: (
        "kie.ai could not use the reference image. It must still be available and be a JPEG, "
        "PNG or WebP of at most 10 MB."
    ),
    FailureKind.INTERNAL: "Something went wrong inside the bot. It has been logged.",
}


def failure_embed(failure: Failure, prompt: str, units_refunded: int) -> discord.Embed:
    embed = _prompt_embed("❌ No image this time", prompt, COLOUR_FAILED)
    reason = _FAILURE_TEXT[failure.kind]
    if failure.kind in OPERATOR_PROBLEMS:
        # Only claimed when it is true: the alert really reached the operator.
        reason += (
            " The bot's operator has been alerted."
            if failure.operator_alerted
            else " Please tell a server admin."
        )
    if failure.detail:
        reason += f"\nReason given: {safe_prompt(failure.detail, 300)}"
    embed.add_field(name="What happened", value=reason, inline=False)
    quota = failure.quota
    embed.add_field(
        name="Quota",
        value=(
            f"Your {units(units_refunded)} went back. "
            f"{quota.remaining} of {quota.limit} left today."
        ),
        inline=False,
    )
    return embed


def cancelled_embed(prompt: str, units_refunded: int) -> discord.Embed:
    """The reply once Cancel was pressed in time: the request ended before reaching kie.ai."""
    embed = _prompt_embed("✖ Cancelled", prompt, COLOUR_FAILED)
    text = f"Nothing was sent to kie.ai. Your {units(units_refunded)} went back."
    embed.add_field(name="Quota", value=text, inline=False)
    return embed


def batch_partly_cancelled(units_refunded: int, still_coming: int) -> str:
    """Cancel on a batch some of whose images kie.ai already has."""
    images = f"{still_coming} image{'s' if still_coming != 1 else ''}"
    return (
        f"Cancelled the images still waiting: your {units(units_refunded)} went back. The "
        f"{images} kie.ai already has are paid for and will be delivered in the reply."
    )


def paused_embed(prompt: str) -> discord.Embed:
    embed = _prompt_embed("⏸️ The bot is restarting…", prompt, COLOUR_WORKING)
    embed.add_field(
        name="Your image is not lost",
        value="It will appear here (or be posted in this channel) as soon as the bot is back.",
        inline=False,
    )
    return embed


def requester_note(user_id: int, ready: bool) -> str:
    """The line above a result posted outside the interaction: it pings the requester only."""
    if ready:
        return f"<@{user_id}>, your image is ready."
    return f"<@{user_id}>, your image could not be made."


def prompt_length_error(length: int) -> str:
    return (
        f"Your prompt is {length} characters long; it must be between {PROMPT_MIN_LENGTH} and "
        f"{PROMPT_MAX_LENGTH}. Nothing was spent."
    )


def auto_needs_image() -> str:
    return (
        "The `auto` shape matches a reference image: add one with the `image` option, or pick "
        "a shape. Nothing was spent."
    )


def reference_not_image(filename: str) -> str:
    return (
        f"**{safe_prompt(filename, 100)}** is not an image the generator can use: send a JPEG, "
        "PNG or WebP. Nothing was spent."
    )


def reference_too_large(size: int, limit: int) -> str:
    return (
        # Decimal megabytes, as kie.ai states its limit.
        f"Your reference image is {size / 1e6:.1f} MB; the generator takes at most "
        f"{limit / 1e6:g} MB. Nothing was spent."
    )


def shutting_down() -> str:
    return "The bot is restarting and is not taking new requests for a moment. Please try again."


# --- /quota -------------------------------------------------------------------------------------


def quota_summary(status: QuotaStatus, costs: Costs, budget: BudgetStatus | None = None) -> str:
    text = (
        f"You have used **{status.used}** of your **{status.limit}** units today; "
        f"**{status.remaining}** left.\n"
        f"A 1K image costs {units(costs.units_1k)}, a 2K image {units(costs.units_2k)}; "
        f"with `model:pro`, {units(costs.units_pro_1k)} and {units(costs.units_pro_2k)}.\n"
        f"Your quota resets {timestamp(status.resets_at)} ({timestamp(status.resets_at, 'f')})."
    )
    if budget is not None:
        text += (
            f"\nThis server's shared budget today: {budget.spent} of {budget.budget} units "
            f"spent, {budget.remaining} left."
        )
    return text


def managers_only() -> str:
    return "Only members who can manage this server can do that."


def option_not_offered() -> str:
    return "That option is not one the bot offers. Nothing was spent."


def not_here() -> str:
    return "You can't use this command here."


def generic_error() -> str:
    return "Sorry, something went wrong on our side. It has been logged; please try again."


# --- moderation -----------------------------------------------------------------------------------


def refusal_text(refusal: Refusal) -> str:
    """What a refused member reads, privately. Every refusal spent nothing, and says so."""
    if refusal.reason is RefusalReason.SHUTTING_DOWN:
        return shutting_down()
    return f"{_refusal_reason(refusal)} Nothing was spent."


def _refusal_reason(refusal: Refusal) -> str:
    reason = refusal.reason
    if reason is RefusalReason.NOT_ENABLED:
        return "This bot is not enabled for this server."
    if reason is RefusalReason.SERVER_BANNED:
        return "The image bot is not available in this server."
    if reason is RefusalReason.DMS_OFF:
        return "The image bot works in servers, not in direct messages."
    if reason is RefusalReason.USER_BANNED:
        return "You can't use the image bot."
    if reason is RefusalReason.PAUSED:
        why = f" ({safe_prompt(refusal.note, 300)})" if refusal.note else ""
        return f"Image generation is paused by the bot's operator{why}. Please try again later."
    if reason is RefusalReason.BANNED:
        return "You can't use the image bot in this server."
    if reason is RefusalReason.WRONG_CHANNEL:
        where = ", ".join(f"<#{channel}>" for channel in refusal.channels)
        return f"In this server, `/imagine` works in {where}."
    if reason in (RefusalReason.BLOCKED_TERM, RefusalReason.GLOBAL_TERM):
        whose = "this server has" if reason is RefusalReason.BLOCKED_TERM else "the bot has"
        term = safe_prompt(refusal.term or "", 100)
        excerpt = safe_prompt(refusal.excerpt or "", 100)
        return f"Your prompt uses a term {whose} blocked: **{term}** (in “{excerpt}”)."
    if reason is RefusalReason.QUOTA and refusal.quota is not None:
        return _over_quota(refusal.quota, refusal.cost)
    if reason in (RefusalReason.BUDGET, RefusalReason.SERVER_CAP) and refusal.budget is not None:
        return _over_budget(refusal.budget, refusal.cost)
    resets = f" It resets {timestamp(refusal.resets_at)}." if refusal.resets_at else ""
    if reason is RefusalReason.TOTAL_CAP:
        return f"The image bot has made all the images it can today, in every server.{resets}"
    return f"You can't make more images here today.{resets}"


def _over_quota(status: QuotaStatus, cost: int) -> str:
    return (
        f"That would need {units(cost)}, but you have {status.remaining} of your "
        f"{status.limit} daily units left. Your quota resets {timestamp(status.resets_at)}."
    )


def _over_budget(status: BudgetStatus, cost: int) -> str:
    return (
        f"This server's daily image budget is used up ({status.spent} of {status.budget} units "
        f"spent; that would need {units(cost)}). It resets {timestamp(status.resets_at)}."
    )


def audit_generation_embed(job: Job, link: str | None) -> discord.Embed:
    embed = _prompt_embed("🖼️ Image generated", job.image.prompt, COLOUR_DONE)
    embed.add_field(name="Member", value=f"<@{job.user_id}>")
    if job.channel_id:
        embed.add_field(name="Channel", value=f"<#{job.channel_id}>")
    embed.add_field(name="Options", value=job_options(job))
    embed.add_field(name="Model", value=model_name(job.image.model))
    if link:
        embed.add_field(name="Result", value=f"[Jump to the image]({link})")
    return embed


def audit_event_embed(
    title: str, member_id: int, detail: str, actor_id: int | None
) -> discord.Embed:
    embed = discord.Embed(title=title, colour=COLOUR_FAILED)
    embed.add_field(name="Member", value=f"<@{member_id}>")
    if actor_id is not None and actor_id != member_id:
        embed.add_field(name="By", value=f"<@{actor_id}>")
    if detail:
        embed.add_field(name="Details", value=safe_prompt(detail, 1000), inline=False)
    return embed


# --- /history -----------------------------------------------------------------------------------


SHOWN_AGAIN_TITLE = "🖼️ Shown again from /history"


def history_embed(jobs: list[Job], showable: set[int] | None = None) -> discord.Embed:
    """The entries, numbered; those in `showable` (job ids) have a Show button below."""
    embed = discord.Embed(title="🗂️ Your latest images", colour=COLOUR_WORKING)
    if not jobs:
        embed.description = "Nothing yet here. Try `/imagine`!"
        return embed
    if showable:
        embed.description = (
            "**Show *n*** posts that image here again, with its buttons. It costs nothing. "
            "kie.ai keeps images for 14 days."
        )
    for number, job in enumerate(jobs, start=1):
        when = timestamp(job.created_at, "f")
        options = f"{job_options(job)} · {model_name(job.image.model)}"
        if job.origin in _ORIGIN_TEXT:
            options = f"{_ORIGIN_TEXT[job.origin]} · {options}"
        if job.state is JobState.DELIVERED and job.deleted_at is not None:
            value = f"{when} · {options} · deleted"
        elif job.state is JobState.DELIVERED:
            link = f" · [open]({job.result_url})" if job.result_url else ""
            value = f"{when} · {options}{link}"
        else:
            value = f"{when} · {options} · not made, units refunded"
        name = f"{number}. {safe_prompt(job.image.prompt, 200)}"
        embed.add_field(name=name, value=value, inline=False)
    embed.set_footer(text="/history forget clears this list (your quota is unchanged).")
    return embed


_NOT_SHOWN = {
    "unknown": (
        "That isn't one of your images in /history here (or it was forgotten), so it can't be "
        "shown. Nothing was posted."
    ),
    "deleted": "That image was deleted, so it is not posted again. Nothing was posted.",
    "expired": (
        "kie.ai no longer has that image (it keeps results for 14 days), so it can't be shown "
        "again. Use Re-roll or `/imagine` for a new one. Nothing was spent."
    ),
    "adult": (
        "That image was made with the safety filter off, so it can only be shown in an "
        "age-restricted channel. Nothing was posted."
    ),
    "undeliverable": "The bot could not post the image here. Nothing was spent.",
}


def not_shown(reason: str) -> str:
    """Why Show posted nothing (`bot.history.NotShown`'s values)."""
    return _NOT_SHOWN[reason]


def forget_confirm(everywhere: bool, in_dms: bool) -> str:
    where = (
        "in every server and in direct messages"
        if everywhere
        else ("in direct messages" if in_dms else "in this server")
    )
    return (
        f"🧹 Forget your finished images {where}? Their prompts, reference images and links "
        "are erased for good and they leave `/history`; the images already posted stay where "
        "they are. Your quota and the server's usage figures do not change, and images still "
        "being made are not touched. Press the button to go ahead, or dismiss this message."
    )


def forgotten(count: int) -> str:
    if not count:
        return "🧹 There was nothing to forget. Nothing changed."
    noun = "image" if count == 1 else "images"
    return f"🧹 Done: {count} {noun} forgotten. `/history` no longer lists them."


def forget_not_yours() -> str:
    return "This button is someone else's: only they can forget their own history."


# --- result buttons -------------------------------------------------------------------------------


def result_unknown() -> str:
    return "The bot has no record of this image any more, so this button can't do anything."


def cancel_not_allowed(requester_id: int) -> str:
    return (
        f"Only <@{requester_id}>, who asked for this image, or a member who can manage messages "
        "can cancel it."
    )


def cancel_too_late() -> str:
    return (
        "Too late to cancel: kie.ai already has this image and it is paid for. It will be "
        "delivered here."
    )


def already_cancelled() -> str:
    return "This request was already cancelled or has finished. Nothing more was changed."


def use_not_allowed(requester_id: int) -> str:
    return (
        f"Only <@{requester_id}>, who asked for these images, or a member who can manage "
        "messages can use this button."
    )


def nothing_to_use() -> str:
    return (
        "This image is not attached to the message (it was too large to upload), so it "
        "cannot be posted on its own. Nothing was spent."
    )


def used_embed(job: Job, filename: str) -> discord.Embed:
    """One image of a batch, posted on its own with the usual buttons (Use)."""
    embed = _prompt_embed("🖼️ Your image is ready", job.image.prompt, COLOUR_DONE)
    embed.add_field(name="Options", value=job_options(job))
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    if filename:
        embed.set_image(url=f"attachment://{filename}")
    return embed


def delete_not_allowed(requester_id: int) -> str:
    return (
        f"Only <@{requester_id}>, who asked for this image, or a member who can manage messages "
        "can delete it."
    )


def reference_expired() -> str:
    return (
        "kie.ai keeps reference images for 3 days, and this one is gone. Use `/imagine` with "
        "the image again, or press Vary. Nothing was spent."
    )


def nothing_to_vary() -> str:
    return (
        "This result has no image attached to start from (it was too large to upload). "
        "Try Re-roll instead. Nothing was spent."
    )


# --- the Edit form --------------------------------------------------------------------------------

_OPTION_NAMES = {
    OptionKey.ASPECT_RATIO: "shape (ar)",
    OptionKey.RESOLUTION: "resolution (res)",
    OptionKey.MODEL: "model",
}
_OPTIONS_EXAMPLE = "`ar 16:9, res 2K, model pro`"


def prompt_too_long_to_edit(length: int, limit: int) -> str:
    return (
        f"This prompt is {length} characters long, more than the {limit} a Discord form can "
        "hold, so it can't be edited here: use `/imagine` with your changes instead. Nothing was "
        "spent."
    )


def options_not_understood(error: OptionsError) -> str:
    """What was wrong with the Edit form's options line, and how to write it."""
    word = f"**{safe_prompt(error.word, 50)}**"
    name = _OPTION_NAMES[error.key] if error.key is not None else ""
    accepted = ", ".join(ACCEPTED[error.key]) if error.key is not None else ""
    if error.problem is Problem.BAD_VALUE:
        what = f"{word} is not a {name} the bot offers; use one of {accepted}."
    elif error.problem is Problem.MISSING_VALUE:
        what = f"{word} needs a value after it ({accepted})."
    elif error.problem is Problem.TWICE:
        what = f"The options give the {name} twice, the second time as {word}."
    else:
        what = f"The options have {word}, which is no option the bot knows."
    return (
        f"{what} Write them like {_OPTIONS_EXAMPLE} (ar: 1:1, 4:3, 3:4, 16:9, 9:16, 3:2, 2:3 "
        "or auto; res: 1K or 2K; model: flex or pro); anything left out stays as it was. "
        "Nothing was spent."
    )


def auto_without_reference() -> str:
    return (
        "`ar auto` matches a reference image, and this image was made without one: pick a "
        "shape. Nothing was spent."
    )


# --- credits and server policy --------------------------------------------------------------------


def low_credits_alert(balance: Balance) -> str:
    if balance.credits <= 0:
        state = "has run out of credits"
    else:
        state = f"is running low: **{balance.credits:,.0f} credits** left"
    return (
        f"⚠️ The image bot's kie.ai account {state} (the warning level is "
        f"{balance.threshold:,.0f}). Top it up at https://kie.ai so members can keep generating; "
        "when it runs out, every request fails and is refunded."
    )


def out_of_credits_alert() -> str:
    return (
        "⛔ kie.ai refused a generation: the bot's account is out of credits. Every "
        "request now fails and is refunded until it is topped up at https://kie.ai."
    )


def key_refused_alert() -> str:
    return (
        "⛔ kie.ai refused the bot's API key (401). Every request fails and is refunded until "
        "`KIE_API_KEY` is fixed and the bot restarted."
    )


def feature_disabled_alert() -> str:
    return (
        "⚠️ kie.ai answered that the image model is switched off (505). Requests fail and are "
        "refunded until kie.ai turns it back on."
    )


def total_cap_alert(cap: int) -> str:
    return (
        f"📉 The bot reached its daily cap of {units(cap)} over every server (`TOTAL_DAILY_CAP`). "
        "Every request is refused until midnight UTC; raise the cap and restart to go on."
    )


# --- help and welcome -----------------------------------------------------------------------------


def help_embed(
    status: QuotaStatus,
    costs: Costs,
    budget: BudgetStatus | None,
    *,
    in_dm: bool,
) -> discord.Embed:
    """What `/help` shows every member: what the bot does and what it costs here, from the live
    configuration (the costs, the member's own limit today and the shared budget)."""
    where = "in direct messages" if in_dm else "in this server"
    embed = discord.Embed(
        title="🖼️ Imagine: images from your words",
        description=(
            "Type `/imagine` with a prompt and the bot draws it with kie.ai's Flux-2 models "
            "(`model:` flex or pro). Add up to 4 reference images (`image`…`image4`), or collect "
            "some from any message with the **Use as reference** message command (Apps menu). "
            "`count:` asks for up to 4 images at once. The image comes in the same reply."
        ),
        colour=COLOUR_WORKING,
    )
    lines = [
        f"Flux-2 flex: a 1K image costs **{units(costs.units_1k)}**, a 2K image "
        f"**{units(costs.units_2k)}**. Flux-2 pro: 1K **{units(costs.units_pro_1k)}**, "
        f"2K **{units(costs.units_pro_2k)}**. Several images cost that much each.",
        f"Your daily quota {where}: **{units(status.limit)}** ({status.remaining} left today); "
        f"it resets {timestamp(status.resets_at)}.",
    ]
    if budget is not None:
        shared = "all direct messages together" if in_dm else "the whole server"
        lines.append(
            f"Budget for {shared} today: {units(budget.budget)} ({budget.remaining} left)."
        )
    lines.append("A failed image gives its units back; a refused request costs nothing.")
    embed.add_field(name=f"Units {where}", value="\n".join(lines), inline=False)
    embed.add_field(
        name="Buttons under each image",
        value=(
            "🎲 **Re-roll**: the same prompt again, a new image.\n"
            "🔀 **Vary**: a new image that starts from this one.\n"
            "✏️ **Edit**: change the prompt or options and run it again.\n"
            "🗑️ **Delete**: removes the image (its requester, or moderators).\n"
            "Several images: **Vary 1…4**, and **Use 1…4** to post one alone.\n"
            "✖ **Cancel** (while waiting): stops it before kie.ai starts; the units go back."
        ),
        inline=False,
    )
    embed.add_field(
        name="Your commands",
        value=(
            "`/quota`: units used and left today.\n"
            "`/history list`: your latest images, each can be shown again; "
            "`/history forget` erases your prompts and links.\n"
            "`/settings`: your own defaults (shape, resolution, model, count, private results)."
        ),
        inline=False,
    )
    if in_dm:
        embed.set_footer(text="In direct messages only you see the images.")
    return embed


def welcome_text() -> str:
    """The one message the bot posts when it joins a server: short, pinging nobody."""
    return (
        "👋 Hello! I turn prompts into images: type `/imagine` and describe what you want. "
        "`/help` explains units, buttons and settings (and, for server managers, how to set "
        "me up)."
    )


# --- /settings ------------------------------------------------------------------------------------


def member_defaults_text(
    defaults: MemberDefaults, costs: Costs, server_model: Model, *, changed: str | None
) -> str:
    """What `/settings` shows: the member's defaults here, each marked as theirs or the bot's.

    `changed`: "saved" or "reset" after a change, None when only showing them."""
    ratio = (
        f"**{defaults.aspect_ratio}** (yours)"
        if defaults.aspect_ratio is not None
        else "**1:1** (the bot's default)"
    )
    size = defaults.resolution or "1K"
    whose = "yours" if defaults.resolution else "the bot's default"
    resolution = f"**{size}** ({whose})"
    model = parse_model(defaults.model) if defaults.model is not None else server_model
    whose = "yours" if defaults.model else "this server's default"
    model_line = f"**{model_name(model)}** ({whose})"
    count = defaults.count or 1
    count_line = f"**{count}** ({'yours' if defaults.count else 'the bot default'})"
    private = (
        "**on**: only you see your images. After 15 minutes (when Discord no longer lets the "
        "bot edit your reply) they come by direct message; if your DMs are closed too, the "
        "image is not posted anywhere and its units go back."
        if defaults.private
        else "**off**: your images are posted in the channel, for everyone there to see."
    )
    head = {
        "saved": "✅ Saved. Your defaults here:",
        "reset": "✅ Back to the bot's defaults:",
        None: "Your defaults here:",
    }[changed]
    return (
        f"{head}\n"
        f"Shape: {ratio} (with a reference image: auto, to match it)\n"
        f"Resolution: {resolution}, {units(costs.units(model, size))} an image\n"
        f"Model: {model_line}\n"
        f"Images per request: {count_line}\n"
        f"Private results: {private}\n"
        "Options you type in `/imagine` always win. Change one with `/settings aspect_ratio:…`, "
        "`resolution:…`, `model:…`, `count:…` or `private:…`; `/settings reset:True` forgets "
        "them all."
    )
