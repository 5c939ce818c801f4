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
from bot.i18n import N_, _, decimal, ngettext
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
        return _("{seconds} s").format(seconds=decimal(seconds, 1))
    minutes, rest = divmod(round(seconds), 60)
    return _("{minutes} min {seconds} s").format(minutes=minutes, seconds=rest)


def units(count: int) -> str:
    return ngettext("{count} unit", "{count} units", count).format(count=count)


def job_options(job: Job) -> str:
    line = f"{job.image.aspect_ratio} · {job.image.resolution}"
    count = max(len(job.image.reference_urls), len(job.image.input_urls))
    if count > 1:
        return ngettext(
            "{options} · from {count} reference image",
            "{options} · from {count} reference images",
            count,
        ).format(options=line, count=count)
    if job.image.image_to_image:
        return _("{options} · from a reference image").format(options=line)
    return line


def model_name(model: Model) -> str:
    return f"Flux-2 {model}"


_ORIGIN_TEXT = {
    Origin.REROLL: N_("🎲 Re-roll"),
    Origin.VARY: N_("🔀 Variation"),
    Origin.EDIT: N_("✏️ Edited image"),
}


def _prompt_embed(title: str, prompt: str, colour: discord.Colour) -> discord.Embed:
    return discord.Embed(
        title=title, description=safe_prompt(prompt, _DESCRIPTION_LIMIT), colour=colour
    )


# --- /imagine -----------------------------------------------------------------------------------

# The one line a member waiting on an outage of kie.ai gets (its circuit breaker is open).
KIE_DOWN_NOTE = N_("Your image will start by itself when kie.ai is back; nothing is charged twice.")

_PHASE_TEXT = {
    Phase.WAITING: N_("⏳ Waiting for a free slot"),
    Phase.QUEUED: N_("🕒 Queued"),
    Phase.GENERATING: N_("🎨 Generating"),
    Phase.PAUSED: N_("⏸️ Paused by the bot's operator"),
    Phase.KIE_DOWN: N_("⚠️ kie.ai is having trouble"),
}


def progress_embed(progress: Progress, job: Job, images: str | None = None) -> discord.Embed:
    embed = _prompt_embed(f"{_(_PHASE_TEXT[progress.phase])}…", job.image.prompt, COLOUR_WORKING)
    embed.add_field(name=_("Options"), value=job_options(job))
    if images is not None:
        embed.add_field(name=_("Images"), value=images)
    embed.add_field(name=_("Started"), value=timestamp(progress.started_at))
    if progress.wait is not None:
        text = queue_text(progress.wait, progress.position, progress.turn_at)
        embed.add_field(name=_("Queue"), value=text, inline=False)
    if progress.phase is Phase.PAUSED:
        still = _("It is still reserved and starts by itself when generation resumes.")
        if progress.note:
            reason = _("Reason: {reason}").format(reason=safe_prompt(progress.note, 300))
            still = f"{reason}\n{still}"
        embed.add_field(name=_("Your image is not lost"), value=still, inline=False)
    if progress.phase is Phase.KIE_DOWN:
        embed.add_field(name=_("Your units are kept"), value=_(KIE_DOWN_NOTE), inline=False)
    if progress.wait is None and progress.position is not None and progress.turn_at is not None:
        # A live timestamp counts down in the client, so the line needs no edits to move.
        embed.add_field(
            name=_("In line"),
            value=_("#{position} · your turn {when}").format(
                position=progress.position, when=timestamp(progress.turn_at)
            ),
        )
    return embed


def queue_text(wait: Wait, position: int | None = None, starts_at: float | None = None) -> str:
    """The place in line (the server's and kie.ai's together) and a live "starts in …"."""
    if wait.held_by is HeldBy.MEMBER_LIMIT:
        why = _(
            "you can have {limit} running at once; it starts when one of yours finishes"
        ).format(limit=wait.limit)
    else:
        why = _("this server runs {limit} at once; it starts when a place frees up").format(
            limit=wait.limit
        )
    place = _("Position **{position}** in line").format(position=position or wait.position)
    if starts_at is not None:
        # A live timestamp counts down in the client: the estimate needs no edits to stay fresh.
        place += _(" · expected {when}").format(when=timestamp(starts_at))
    return _("{place} · {why}. Nothing is charged twice.").format(place=place, why=why)


def _quota_left(quota: QuotaStatus) -> str:
    return _("{remaining} of {limit}").format(remaining=quota.remaining, limit=quota.limit)


def result_embed(finished: Finished, filename: str, note: str | None = None) -> discord.Embed:
    job = finished.job
    title = _("🖼️ Your image is ready")
    if finished.shown_again:
        title = _(SHOWN_AGAIN_TITLE)
    elif job.origin in _ORIGIN_TEXT:
        title = _("🖼️ {what} is ready").format(what=_(_ORIGIN_TEXT[job.origin]))
    embed = _prompt_embed(title, job.image.prompt, COLOUR_DONE)
    embed.add_field(name=_("Options"), value=job_options(job))
    embed.add_field(name=_("Model"), value=model_name(job.image.model))
    embed.add_field(name=_("Requested by"), value=f"<@{job.user_id}>")
    if finished.shown_again:
        embed.add_field(name=_("Made"), value=timestamp(job.created_at, "f"))
    else:
        embed.add_field(name=_("Took"), value=duration(finished.elapsed))
    embed.add_field(name=_("Quota left today"), value=_quota_left(finished.quota))
    if note:
        embed.add_field(name=_("Note"), value=note, inline=False)
    if filename:
        embed.set_image(url=f"attachment://{filename}")
    return embed


_BATCH_PHASES = {
    Phase.WAITING: N_("{count} waiting"),
    Phase.PAUSED: N_("{count} paused"),
    Phase.KIE_DOWN: N_("{count} waiting for kie.ai"),
    Phase.QUEUED: N_("{count} queued"),
    Phase.GENERATING: N_("{count} generating"),
}


def batch_progress_text(counts: dict[Phase, int]) -> str:
    """Where a batch's images are: "1 generating · 3 waiting"."""
    parts = [_(_BATCH_PHASES[phase]).format(count=n) for phase, n in counts.items() if n]
    return " · ".join(parts) or _("starting")


def batch_result_embed(outcome: BatchOutcome, notes: list[str]) -> discord.Embed:
    """One message for a request's images: they are its attachments (numbered in order)."""
    last = outcome.finished[-1]
    job = last.job
    made = len(outcome.finished)
    if made > 1:
        title = ngettext(
            "🖼️ Your {count} image is ready", "🖼️ Your {count} images are ready", made
        ).format(count=made)
    else:
        title = _("🖼️ Your image is ready")
    embed = _prompt_embed(title, job.image.prompt, COLOUR_DONE)
    embed.add_field(name=_("Options"), value=job_options(job))
    embed.add_field(name=_("Requested by"), value=f"<@{job.user_id}>")
    embed.add_field(name=_("Took"), value=duration(max(f.elapsed for f in outcome.finished)))
    quota = last.quota
    if outcome.failed:
        quota_text = _(
            "{failed} of {total} could not be made; their {units} went back. "
            "{remaining} of {limit} left today."
        ).format(
            failed=outcome.failed,
            total=len(outcome.jobs),
            units=units(outcome.refunded_units),
            remaining=quota.remaining,
            limit=quota.limit,
        )
    else:
        quota_text = _quota_left(quota)
    embed.add_field(name=_("Quota left today"), value=quota_text, inline=False)
    embed.add_field(
        name=_("Buttons"),
        value=_("**Vary N** makes a variation of image N; **Use N** posts image N on its own."),
        inline=False,
    )
    if notes:
        embed.add_field(name=_("Note"), value="\n".join(notes)[:1024], inline=False)
    return embed


def batch_failure_embed(outcome: BatchOutcome, failure: Failure | None) -> discord.Embed:
    """None of a request's images could be made: the usual failure, for all the units."""
    prompt = outcome.jobs[0].image.prompt
    if failure is not None:
        return failure_embed(failure, prompt, outcome.refunded_units)
    embed = _prompt_embed(_("❌ No image this time"), prompt, COLOUR_FAILED)
    embed.add_field(
        name=_("Quota"),
        value=_("Your {units} went back.").format(units=units(outcome.refunded_units)),
        inline=False,
    )
    return embed


def resized_note(original_size: int, sent_size: int, limit: int, link: str) -> str:
    return _(
        "The original ({original}) is over this server's {limit} upload limit, so this is a "
        "smaller JPEG ({sent}). [Full-size original]({link}) (the link expires within a day)."
    ).format(
        original=megabytes(original_size),
        limit=megabytes(limit),
        sent=megabytes(sent_size),
        link=link,
    )


def link_only_note(original_size: int, limit: int, link: str) -> str:
    return _(
        "The image ({size}) is over this server's {limit} upload limit and could not be shrunk "
        "to fit: [open it here]({link}) (the link expires within a day)."
    ).format(size=megabytes(original_size), limit=megabytes(limit), link=link)


def reduced_note(number: int, link: str) -> str:
    """A batch's image that was re-encoded to fit."""
    return _("{number}: smaller JPEG, [full-size original]({link})").format(
        number=number, link=link
    )


def megabytes(size: int) -> str:
    return _("{size} MB").format(size=decimal(size / 2**20, 1))


_FAILURE_TEXT = {
    FailureKind.PROMPT_REJECTED: N_("kie.ai rejected this prompt or its options."),
    FailureKind.BUSY: N_("kie.ai is too busy right now. Please try again in a minute."),
    FailureKind.MAINTENANCE: N_("kie.ai is under maintenance. Please try again later."),
    FailureKind.GENERATION_FAILED: N_("The generation failed at kie.ai."),
    FailureKind.FEATURE_DISABLED: N_("This image model is switched off at kie.ai for now."),
    FailureKind.OUT_OF_CREDITS: N_("The bot's kie.ai account is out of credits."),
    FailureKind.MISCONFIGURED: N_("The bot's kie.ai API key was refused."),
    FailureKind.CONTENT_FILTERED: N_("kie.ai's safety filter blocked this image; try rewording."),
    FailureKind.TIMED_OUT: N_("kie.ai took too long to answer, so the bot gave up waiting."),
    FailureKind.UNREACHABLE: N_("The bot could not reach kie.ai. Please try again later."),
    FailureKind.SUBMIT_UNCERTAIN: N_(
        "The connection to kie.ai broke while sending your request, so the bot did not send it "
        "again (that could have made a second, paid image). Please try again."
    ),
    FailureKind.INTERRUPTED: N_(
        "The bot restarted while sending your request to kie.ai and cannot tell whether it "
        "arrived, so it did not send it again (that could have made a second, paid image). "
        "Please try again."
    ),
    FailureKind.BAD_RESPONSE: N_("kie.ai sent an answer the bot could not read."),
    FailureKind.DOWNLOAD_FAILED: N_("The image was made, but the bot could not download it."),
    FailureKind.DELIVERY_FAILED: N_("The image was made, but Discord would not accept it."),
    FailureKind.REFERENCE_FAILED: N_(
        "kie.ai could not use the reference image. It must still be available and be a JPEG, "
        "PNG or WebP of at most 10 MB."
    ),
    FailureKind.INTERNAL: N_("Something went wrong inside the bot. It has been logged."),
}


def failure_embed(failure: Failure, prompt: str, units_refunded: int) -> discord.Embed:
    embed = _prompt_embed(_("❌ No image this time"), prompt, COLOUR_FAILED)
    reason = _(_FAILURE_TEXT[failure.kind])
    if failure.kind in OPERATOR_PROBLEMS:
        # Only claimed when it is true: the alert really reached the operator.
        told = (
            _("The bot's operator has been alerted.")
            if failure.operator_alerted
            else _("Please tell a server admin.")
        )
        reason = f"{reason} {told}"
    if failure.detail:
        given = _("Reason given: {reason}").format(reason=safe_prompt(failure.detail, 300))
        reason = f"{reason}\n{given}"
    embed.add_field(name=_("What happened"), value=reason, inline=False)
    quota = failure.quota
    embed.add_field(
        name=_("Quota"),
        value=_("Your {units} went back. {remaining} of {limit} left today.").format(
            units=units(units_refunded), remaining=quota.remaining, limit=quota.limit
        ),
        inline=False,
    )
    return embed


def cancelled_embed(prompt: str, units_refunded: int) -> discord.Embed:
    """The reply once Cancel was pressed in time: the request ended before reaching kie.ai."""
    embed = _prompt_embed(_("✖ Cancelled"), prompt, COLOUR_FAILED)
    text = _("Nothing was sent to kie.ai. Your {units} went back.").format(
        units=units(units_refunded)
    )
    embed.add_field(name=_("Quota"), value=text, inline=False)
    return embed


def batch_partly_cancelled(units_refunded: int, still_coming: int) -> str:
    """Cancel on a batch some of whose images kie.ai already has."""
    return ngettext(
        "Cancelled the images still waiting: your {units} went back. The {count} image kie.ai "
        "already has are paid for and will be delivered in the reply.",
        "Cancelled the images still waiting: your {units} went back. The {count} images kie.ai "
        "already has are paid for and will be delivered in the reply.",
        still_coming,
    ).format(units=units(units_refunded), count=still_coming)


def paused_embed(prompt: str) -> discord.Embed:
    embed = _prompt_embed(_("⏸️ The bot is restarting…"), prompt, COLOUR_WORKING)
    embed.add_field(
        name=_("Your image is not lost"),
        value=_("It will appear here (or be posted in this channel) as soon as the bot is back."),
        inline=False,
    )
    return embed


def requester_note(user_id: int, ready: bool) -> str:
    """The line above a result posted outside the interaction: it pings the requester only."""
    if ready:
        return _("{member}, your image is ready.").format(member=f"<@{user_id}>")
    return _("{member}, your image could not be made.").format(member=f"<@{user_id}>")


def prompt_length_error(length: int) -> str:
    return _(
        "Your prompt is {length} characters long; it must be between {low} and {high}. "
        "Nothing was spent."
    ).format(length=length, low=PROMPT_MIN_LENGTH, high=PROMPT_MAX_LENGTH)


def auto_needs_image() -> str:
    return _(
        "The `auto` shape matches a reference image: add one with the `image` option, or pick "
        "a shape. Nothing was spent."
    )


def reference_not_image(filename: str) -> str:
    return _(
        "**{filename}** is not an image the generator can use: send a JPEG, PNG or WebP. "
        "Nothing was spent."
    ).format(filename=safe_prompt(filename, 100))


def reference_too_large(size: int, limit: int) -> str:
    # Decimal megabytes, as kie.ai states its limit.
    return _(
        "Your reference image is {size} MB; the generator takes at most {limit} MB. "
        "Nothing was spent."
    ).format(size=decimal(size / 1e6, 1), limit=decimal(limit / 1e6, 0))


def shutting_down() -> str:
    return _("The bot is restarting and is not taking new requests for a moment. Please try again.")


# --- /quota -------------------------------------------------------------------------------------


def quota_summary(status: QuotaStatus, costs: Costs, budget: BudgetStatus | None = None) -> str:
    lines = [
        _("You have used **{used}** of your **{limit}** units today; **{remaining}** left.").format(
            used=status.used, limit=status.limit, remaining=status.remaining
        ),
        _(
            "A 1K image costs {units_1k}, a 2K image {units_2k}; with `model:pro`, "
            "{pro_1k} and {pro_2k}."
        ).format(
            units_1k=units(costs.units_1k),
            units_2k=units(costs.units_2k),
            pro_1k=units(costs.units_pro_1k),
            pro_2k=units(costs.units_pro_2k),
        ),
        _("Your quota resets {when} ({date}).").format(
            when=timestamp(status.resets_at), date=timestamp(status.resets_at, "f")
        ),
    ]
    if budget is not None:
        lines.append(
            _(
                "This server's shared budget today: {spent} of {budget} units spent, "
                "{remaining} left."
            ).format(spent=budget.spent, budget=budget.budget, remaining=budget.remaining)
        )
    return "\n".join(lines)


def managers_only() -> str:
    return _("Only members who can manage this server can do that.")


def option_not_offered() -> str:
    return _("That option is not one the bot offers. Nothing was spent.")


def not_here() -> str:
    return _("You can't use this command here.")


def generic_error() -> str:
    return _("Sorry, something went wrong on our side. It has been logged; please try again.")


# --- moderation -----------------------------------------------------------------------------------


def refusal_text(refusal: Refusal) -> str:
    """What a refused member reads, privately. Every refusal spent nothing, and says so."""
    if refusal.reason is RefusalReason.SHUTTING_DOWN:
        return shutting_down()
    nothing = _("Nothing was spent.")
    return f"{_refusal_reason(refusal)} {nothing}"


def _refusal_reason(refusal: Refusal) -> str:
    reason = refusal.reason
    if reason is RefusalReason.NOT_ENABLED:
        return _("This bot is not enabled for this server.")
    if reason is RefusalReason.SERVER_BANNED:
        return _("The image bot is not available in this server.")
    if reason is RefusalReason.DMS_OFF:
        return _("The image bot works in servers, not in direct messages.")
    if reason is RefusalReason.USER_BANNED:
        return _("You can't use the image bot.")
    if reason is RefusalReason.PAUSED:
        if refusal.note:
            return _(
                "Image generation is paused by the bot's operator ({note}). Please try again later."
            ).format(note=safe_prompt(refusal.note, 300))
        return _("Image generation is paused by the bot's operator. Please try again later.")
    if reason is RefusalReason.BANNED:
        return _("You can't use the image bot in this server.")
    if reason is RefusalReason.NO_SERVER_KEY:
        return _(
            "This server needs its own kie.ai key before anyone can make images: ask someone "
            "who can manage the server to run `/server kie-key set`."
        )
    if reason is RefusalReason.WRONG_CHANNEL:
        where = ", ".join(f"<#{channel}>" for channel in refusal.channels)
        return _("In this server, `/imagine` works in {channels}.").format(channels=where)
    if reason in (RefusalReason.BLOCKED_TERM, RefusalReason.GLOBAL_TERM):
        term = safe_prompt(refusal.term or "", 100)
        excerpt = safe_prompt(refusal.excerpt or "", 100)
        if reason is RefusalReason.BLOCKED_TERM:
            text = _(
                "Your prompt uses a term this server has blocked: **{term}** (in “{excerpt}”)."
            )
        else:
            text = _("Your prompt uses a term the bot has blocked: **{term}** (in “{excerpt}”).")
        return text.format(term=term, excerpt=excerpt)
    if reason is RefusalReason.QUOTA and refusal.quota is not None:
        return _over_quota(refusal.quota, refusal.cost)
    if reason in (RefusalReason.BUDGET, RefusalReason.SERVER_CAP) and refusal.budget is not None:
        return _over_budget(refusal.budget, refusal.cost)
    if reason is RefusalReason.TOTAL_CAP:
        text = _("The image bot has made all the images it can today, in every server.")
    else:
        text = _("You can't make more images here today.")
    if refusal.resets_at:
        text += " " + _("It resets {when}.").format(when=timestamp(refusal.resets_at))
    return text


def _over_quota(status: QuotaStatus, cost: int) -> str:
    return _(
        "That would need {units}, but you have {remaining} of your {limit} daily units left. "
        "Your quota resets {when}."
    ).format(
        units=units(cost),
        remaining=status.remaining,
        limit=status.limit,
        when=timestamp(status.resets_at),
    )


def _over_budget(status: BudgetStatus, cost: int) -> str:
    return _(
        "This server's daily image budget is used up ({spent} of {budget} units spent; that "
        "would need {units}). It resets {when}."
    ).format(
        spent=status.spent,
        budget=status.budget,
        units=units(cost),
        when=timestamp(status.resets_at),
    )


def audit_generation_embed(job: Job, link: str | None) -> discord.Embed:
    embed = _prompt_embed(_("🖼️ Image generated"), job.image.prompt, COLOUR_DONE)
    embed.add_field(name=_("Member"), value=f"<@{job.user_id}>")
    if job.channel_id:
        embed.add_field(name=_("Channel"), value=f"<#{job.channel_id}>")
    embed.add_field(name=_("Options"), value=job_options(job))
    embed.add_field(name=_("Model"), value=model_name(job.image.model))
    if link:
        embed.add_field(name=_("Result"), value=_("[Jump to the image]({link})").format(link=link))
    return embed


def audit_event_embed(
    title: str, member_id: int, detail: str, actor_id: int | None
) -> discord.Embed:
    embed = discord.Embed(title=title, colour=COLOUR_FAILED)
    if member_id:  # 0: about the server itself (its kie.ai key failed)
        embed.add_field(name=_("Member"), value=f"<@{member_id}>")
    if actor_id is not None and actor_id != member_id:
        embed.add_field(name=_("By"), value=f"<@{actor_id}>")
    if detail:
        embed.add_field(name=_("Details"), value=safe_prompt(detail, 1000), inline=False)
    return embed


# --- /history -----------------------------------------------------------------------------------


SHOWN_AGAIN_TITLE = N_("🖼️ Shown again from /history")


def history_embed(jobs: list[Job], showable: set[int] | None = None) -> discord.Embed:
    """The entries, numbered; those in `showable` (job ids) have a Show button below."""
    embed = discord.Embed(title=_("🗂️ Your latest images"), colour=COLOUR_WORKING)
    if not jobs:
        embed.description = _("Nothing yet here. Try `/imagine`!")
        return embed
    if showable:
        embed.description = _(
            "**Show *n*** posts that image here again, with its buttons. It costs nothing. "
            "kie.ai keeps images for 14 days."
        )
    for number, job in enumerate(jobs, start=1):
        when = timestamp(job.created_at, "f")
        options = f"{job_options(job)} · {model_name(job.image.model)}"
        if job.origin in _ORIGIN_TEXT:
            options = f"{_(_ORIGIN_TEXT[job.origin])} · {options}"
        if job.state is JobState.DELIVERED and job.deleted_at is not None:
            value = _("{when} · {options} · deleted").format(when=when, options=options)
        elif job.state is JobState.DELIVERED:
            value = f"{when} · {options}"
            if job.result_url:
                value += _(" · [open]({link})").format(link=job.result_url)
        else:
            value = _("{when} · {options} · not made, units refunded").format(
                when=when, options=options
            )
        name = f"{number}. {safe_prompt(job.image.prompt, 200)}"
        embed.add_field(name=name, value=value, inline=False)
    embed.set_footer(text=_("/history forget clears this list (your quota is unchanged)."))
    return embed


_NOT_SHOWN = {
    "unknown": N_(
        "That isn't one of your images in /history here (or it was forgotten), so it can't be "
        "shown. Nothing was posted."
    ),
    "deleted": N_("That image was deleted, so it is not posted again. Nothing was posted."),
    "expired": N_(
        "kie.ai no longer has that image (it keeps results for 14 days), so it can't be shown "
        "again. Use Re-roll or `/imagine` for a new one. Nothing was spent."
    ),
    "adult": N_(
        "That image was made with the safety filter off, so it can only be shown in an "
        "age-restricted channel. Nothing was posted."
    ),
    "undeliverable": N_("The bot could not post the image here. Nothing was spent."),
}


def not_shown(reason: str) -> str:
    """Why Show posted nothing (`bot.history.NotShown`'s values)."""
    return _(_NOT_SHOWN[reason])


def forget_confirm(everywhere: bool, in_dms: bool) -> str:
    if everywhere:
        question = _("🧹 Forget your finished images in every server and in direct messages?")
    elif in_dms:
        question = _("🧹 Forget your finished images in direct messages?")
    else:
        question = _("🧹 Forget your finished images in this server?")
    details = _(
        "Their prompts, reference images and links are erased for good and they leave "
        "`/history`; the images already posted stay where they are. Your quota and the "
        "server's usage figures do not change, and images still being made are not touched. "
        "Press the button to go ahead, or dismiss this message."
    )
    return f"{question} {details}"


def forgotten(count: int) -> str:
    if not count:
        return _("🧹 There was nothing to forget. Nothing changed.")
    return ngettext(
        "🧹 Done: {count} image forgotten. `/history` no longer lists them.",
        "🧹 Done: {count} images forgotten. `/history` no longer lists them.",
        count,
    ).format(count=count)


def forget_not_yours() -> str:
    return _("This button is someone else's: only they can forget their own history.")


# --- result buttons -------------------------------------------------------------------------------


def result_unknown() -> str:
    return _("The bot has no record of this image any more, so this button can't do anything.")


def cancel_not_allowed(requester_id: int) -> str:
    return _(
        "Only {member}, who asked for this image, or a member who can manage messages can "
        "cancel it."
    ).format(member=f"<@{requester_id}>")


def cancel_too_late() -> str:
    return _(
        "Too late to cancel: kie.ai already has this image and it is paid for. It will be "
        "delivered here."
    )


def already_cancelled() -> str:
    return _("This request was already cancelled or has finished. Nothing more was changed.")


def use_not_allowed(requester_id: int) -> str:
    return _(
        "Only {member}, who asked for these images, or a member who can manage messages can "
        "use this button."
    ).format(member=f"<@{requester_id}>")


def nothing_to_use() -> str:
    return _(
        "This image is not attached to the message (it was too large to upload), so it "
        "cannot be posted on its own. Nothing was spent."
    )


def used_embed(job: Job, filename: str) -> discord.Embed:
    """One image of a batch, posted on its own with the usual buttons (Use)."""
    embed = _prompt_embed(_("🖼️ Your image is ready"), job.image.prompt, COLOUR_DONE)
    embed.add_field(name=_("Options"), value=job_options(job))
    embed.add_field(name=_("Requested by"), value=f"<@{job.user_id}>")
    if filename:
        embed.set_image(url=f"attachment://{filename}")
    return embed


def delete_not_allowed(requester_id: int) -> str:
    return _(
        "Only {member}, who asked for this image, or a member who can manage messages can "
        "delete it."
    ).format(member=f"<@{requester_id}>")


def reference_expired() -> str:
    return _(
        "kie.ai keeps reference images for 3 days, and this one is gone. Use `/imagine` with "
        "the image again, or press Vary. Nothing was spent."
    )


def nothing_to_vary() -> str:
    return _(
        "This result has no image attached to start from (it was too large to upload). "
        "Try Re-roll instead. Nothing was spent."
    )


# --- the Edit form --------------------------------------------------------------------------------

_OPTION_NAMES = {
    OptionKey.ASPECT_RATIO: N_("shape (ar)"),
    OptionKey.RESOLUTION: N_("resolution (res)"),
    OptionKey.MODEL: N_("model"),
}
_OPTIONS_EXAMPLE = "`ar 16:9, res 2K, model pro`"


def prompt_too_long_to_edit(length: int, limit: int) -> str:
    return _(
        "This prompt is {length} characters long, more than the {limit} a Discord form can "
        "hold, so it can't be edited here: use `/imagine` with your changes instead. Nothing "
        "was spent."
    ).format(length=length, limit=limit)


def options_not_understood(error: OptionsError) -> str:
    """What was wrong with the Edit form's options line, and how to write it."""
    word = f"**{safe_prompt(error.word, 50)}**"
    name = _(_OPTION_NAMES[error.key]) if error.key is not None else ""
    accepted = ", ".join(ACCEPTED[error.key]) if error.key is not None else ""
    if error.problem is Problem.BAD_VALUE:
        what = _("{word} is not a {name} the bot offers; use one of {accepted}.")
    elif error.problem is Problem.MISSING_VALUE:
        what = _("{word} needs a value after it ({accepted}).")
    elif error.problem is Problem.TWICE:
        what = _("The options give the {name} twice, the second time as {word}.")
    else:
        what = _("The options have {word}, which is no option the bot knows.")
    how = _(
        "Write them like {example} (ar: 1:1, 4:3, 3:4, 16:9, 9:16, 3:2, 2:3 or auto; res: 1K "
        "or 2K; model: flex or pro); anything left out stays as it was. Nothing was spent."
    )
    what = what.format(word=word, name=name, accepted=accepted)
    return f"{what} {how.format(example=_OPTIONS_EXAMPLE)}"


def auto_without_reference() -> str:
    return _(
        "`ar auto` matches a reference image, and this image was made without one: pick a "
        "shape. Nothing was spent."
    )


# --- credits and server policy --------------------------------------------------------------------
# Alerts for the bot's operator: English, whatever the language of the request that raised them.


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
    amount = f"{cap} unit" if cap == 1 else f"{cap} units"
    return (
        f"📉 The bot reached its daily cap of {amount} over every server (`TOTAL_DAILY_CAP`). "
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
    embed = discord.Embed(
        title=_("🖼️ Imagine: images from your words"),
        description=_(
            "Type `/imagine` with a prompt and the bot draws it with kie.ai's Flux-2 models "
            "(`model:` flex or pro). Add up to 4 reference images (`image`…`image4`), or collect "
            "some from any message with the **Use as reference** message command (Apps menu). "
            "`count:` asks for up to 4 images at once. The image comes in the same reply."
        ),
        colour=COLOUR_WORKING,
    )
    lines = [
        _(
            "Flux-2 flex: a 1K image costs **{units_1k}**, a 2K image **{units_2k}**. "
            "Flux-2 pro: 1K **{pro_1k}**, 2K **{pro_2k}**. Several images cost that much each."
        ).format(
            units_1k=units(costs.units_1k),
            units_2k=units(costs.units_2k),
            pro_1k=units(costs.units_pro_1k),
            pro_2k=units(costs.units_pro_2k),
        ),
    ]
    if in_dm:
        quota = _(
            "Your daily quota in direct messages: **{units}** ({remaining} left today); it "
            "resets {when}."
        )
    else:
        quota = _(
            "Your daily quota in this server: **{units}** ({remaining} left today); it "
            "resets {when}."
        )
    lines.append(
        quota.format(
            units=units(status.limit),
            remaining=status.remaining,
            when=timestamp(status.resets_at),
        )
    )
    if budget is not None:
        if in_dm:
            shared = _("Budget for all direct messages together today: {units} ({remaining} left).")
        else:
            shared = _("Budget for the whole server today: {units} ({remaining} left).")
        lines.append(shared.format(units=units(budget.budget), remaining=budget.remaining))
    lines.append(_("A failed image gives its units back; a refused request costs nothing."))
    title = _("Units in direct messages") if in_dm else _("Units in this server")
    embed.add_field(name=title, value="\n".join(lines), inline=False)
    embed.add_field(
        name=_("Buttons under each image"),
        value="\n".join(
            (
                _("🎲 **Re-roll**: the same prompt again, a new image."),
                _("🔀 **Vary**: a new image that starts from this one."),
                _("✏️ **Edit**: change the prompt or options and run it again."),
                _("🗑️ **Delete**: removes the image (its requester, or moderators)."),
                _("Several images: **Vary 1…4**, and **Use 1…4** to post one alone."),
                _(
                    "✖ **Cancel** (while waiting): stops it before kie.ai starts; the units go back."  # noqa: E501
                ),
            )
        ),
        inline=False,
    )
    embed.add_field(
        name=_("Your commands"),
        value="\n".join(
            (
                _("`/quota`: units used and left today."),
                _(
                    "`/history list`: your latest images, each can be shown again; "
                    "`/history forget` erases your prompts and links."
                ),
                _(
                    "`/settings`: your own defaults (shape, resolution, model, count, private "
                    "results)."
                ),
            )
        ),
        inline=False,
    )
    if in_dm:
        embed.set_footer(text=_("In direct messages only you see the images."))
    return embed


def welcome_text() -> str:
    """The one message the bot posts when it joins a server: short, pinging nobody."""
    return _(
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
    yours = _("**{value}** (yours)")
    if defaults.aspect_ratio is not None:
        ratio = yours.format(value=defaults.aspect_ratio)
    else:
        ratio = _("**{value}** (the bot's default)").format(value="1:1")
    size = defaults.resolution or "1K"
    resolution = (yours if defaults.resolution else _("**{value}** (the bot's default)")).format(
        value=size
    )
    model = parse_model(defaults.model) if defaults.model is not None else server_model
    model_line = (yours if defaults.model else _("**{value}** (this server's default)")).format(
        value=model_name(model)
    )
    count = defaults.count or 1
    count_line = (yours if defaults.count else _("**{value}** (the bot default)")).format(
        value=count
    )
    private = (
        _(
            "**on**: only you see your images. After 15 minutes (when Discord no longer lets "
            "the bot edit your reply) they come by direct message; if your DMs are closed too, "
            "the image is not posted anywhere and its units go back."
        )
        if defaults.private
        else _("**off**: your images are posted in the channel, for everyone there to see.")
    )
    head = {
        "saved": _("✅ Saved. Your defaults here:"),
        "reset": _("✅ Back to the bot's defaults:"),
        None: _("Your defaults here:"),
    }[changed]
    return "\n".join(
        (
            head,
            _("Shape: {value} (with a reference image: auto, to match it)").format(value=ratio),
            _("Resolution: {value}, {units} an image").format(
                value=resolution, units=units(costs.units(model, size))
            ),
            _("Model: {value}").format(value=model_line),
            _("Images per request: {value}").format(value=count_line),
            _("Private results: {value}").format(value=private),
            _(
                "Options you type in `/imagine` always win. Change one with "
                "`/settings aspect_ratio:…`, `resolution:…`, `model:…`, `count:…` or "
                "`private:…`; `/settings reset:True` forgets them all."
            ),
        )
    )
