"""The bot's domain: jobs and their states, what a charge must stay within, server policy, and
the records the commands read. Plain frozen dataclasses and enums; no I/O, no Discord, no SQL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

AspectRatio = Literal["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "auto"]
Resolution = Literal["1K", "2K"]
Model = Literal["flex", "pro"]  # kie.ai's Flux-2 flex and pro models
ASPECT_RATIOS: tuple[AspectRatio, ...] = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3")
AUTO_ASPECT_RATIO: AspectRatio = "auto"  # image-to-image only: match the reference image
RESOLUTIONS: tuple[Resolution, ...] = ("1K", "2K")
MODELS: tuple[Model, ...] = ("flex", "pro")
DEFAULT_MODEL: Model = "flex"  # where neither the member nor the server chose


def parse_aspect_ratio(value: str) -> AspectRatio:
    """`value` as an aspect ratio (as stored or typed); ValueError for anything else."""
    if value in ASPECT_RATIOS or value == AUTO_ASPECT_RATIO:
        return value
    raise ValueError(f"not an aspect ratio: {value!r}")


def parse_resolution(value: str) -> Resolution:
    """`value` as a resolution (as stored or typed); ValueError for anything else."""
    if value in RESOLUTIONS:
        return value
    raise ValueError(f"not a resolution: {value!r}")


def parse_model(value: str) -> Model:
    """`value` as a model name (as stored or typed); ValueError for anything else."""
    if value in MODELS:
        return value
    raise ValueError(f"not a model: {value!r}")


@dataclass(frozen=True)
class ImageRequest:
    """What to draw, as one value from the command to the stored job to kie.ai's createTask.

    The command builds it, the job ledger stores it with the charge, and `JobService` sends it
    once its references are on kie.ai's file host (`input_urls`). References are carried as
    the member gave them (`reference_urls`) and, once uploaded, as kie.ai's links
    (`input_urls`, kept 3 days); any reference makes it an image-to-image request.
    """

    prompt: str
    aspect_ratio: AspectRatio = "1:1"
    resolution: Resolution = "1K"
    model: Model = DEFAULT_MODEL
    reference_urls: tuple[str, ...] = ()
    input_urls: tuple[str, ...] = ()
    # kie.ai's own content filter ("defaults to false": off unless asked for). The bot always
    # sends it, true unless the operator, the server and the channel all allow adult content.
    nsfw_checker: bool = True

    @property
    def image_to_image(self) -> bool:
        return bool(self.reference_urls or self.input_urls)

    @property
    def uploaded(self) -> bool:
        """Every reference is on kie.ai's file host (true for text-to-image)."""
        return len(self.input_urls) >= len(self.reference_urls)


REFERENCES_MAX = 8  # kie.ai's input_urls takes 1 to 8 images


@dataclass(frozen=True)
class TrayImage:
    """One image in a member's reference tray, which `/imagine` adds to its next request."""

    key: str  # the attachment's id: the same image is never added twice
    url: str
    filename: str
    added_at: float = 0.0


@dataclass(frozen=True)
class TrayAdded:
    """What adding images to a tray did (`ReferenceTrays.add`)."""

    added: tuple[TrayImage, ...]
    duplicates: int  # already in the tray (or twice in what was given)
    no_room: int  # left out: the tray was full
    tray: tuple[TrayImage, ...]  # everything it holds now, oldest first


class JobState(enum.StrEnum):
    """Each state is committed before the side effect it announces is attempted."""

    RESERVED = "reserved"  # units charged; nothing sent to kie.ai yet (safe to submit)
    SUBMITTING = "submitting"  # createTask may be on the wire: never send it again
    SUBMITTED = "submitted"  # kie.ai accepted it; task_id is known
    DELIVERING = "delivering"  # the image is being posted to Discord
    DELIVERED = "delivered"  # the image reached Discord; the charge is final
    REFUNDED = "refunded"  # failed or rejected; the units were given back (see `error`)


OPEN_STATES = (
    JobState.RESERVED,
    JobState.SUBMITTING,
    JobState.SUBMITTED,
    JobState.DELIVERING,
)
CHARGED_STATES = (*OPEN_STATES, JobState.DELIVERED)


@dataclass(frozen=True)
class ReplyTarget:
    """The interaction a job answers: its reply can be edited while the token lives (15 min)."""

    application_id: int
    token: str = field(repr=False)
    created_at: float  # Unix time of the interaction
    attachment_limit: int  # bytes per file, as the interaction reported


class DeliveryRoute(enum.StrEnum):
    """Where a finished image was posted."""

    REPLY = "reply"  # the command's own reply (the interaction token was still alive)
    CHANNEL = "channel"  # a new message in the channel (the token had expired)
    DM = "dm"  # a direct message to the member (the channel was closed to the bot)


class AdjustmentKind(enum.StrEnum):
    """An admin's change to a member's day in the ledger."""

    GRANT = "grant"  # extra units for today
    RESET = "reset"  # today's jobs so far stop counting


class LogKind(enum.StrEnum):
    """The kinds of a server's moderation log: admins' changes and refused prompts."""

    DAILY_QUOTA = "daily_quota"
    DAILY_BUDGET = "daily_budget"
    MAX_RUNNING_PER_MEMBER = "max_running_per_member"
    MAX_RUNNING = "max_running"
    NSFW_ALLOWED = "nsfw_allowed"
    NSFW_SPOILER = "nsfw_spoiler"
    DEFAULT_MODEL = "default_model"
    ROLE_QUOTA = "role_quota"
    GRANT = "grant"
    RESET = "reset"
    TERM_ADDED = "term_added"
    TERM_REMOVED = "term_removed"
    BANNED = "banned"
    UNBANNED = "unbanned"
    AUDIT_CHANNEL = "audit_channel"
    CHANNEL_ALLOWED = "channel_allowed"
    CHANNEL_DISALLOWED = "channel_disallowed"
    REFUSED_BANNED = "refused_banned"
    REFUSED_BLOCKED_TERM = "refused_blocked_term"
    REFUSED_GLOBAL_TERM = "refused_global_term"
    REFUSED_USER_BANNED = "refused_user_banned"


class Origin(enum.StrEnum):
    COMMAND = "command"  # /imagine
    REROLL = "reroll"  # the Re-roll button: same prompt and options
    VARY = "vary"  # the Vary button: the result as the reference image
    EDIT = "edit"  # the Edit button: a changed prompt or options, from the form


@dataclass(frozen=True)
class NewJob:
    user_id: int
    guild_id: int | None
    channel_id: int | None
    day: str
    units: int
    image: ImageRequest
    reply: ReplyTarget | None = None
    origin: Origin = Origin.COMMAND
    parent_job_id: int | None = None
    spoiler: bool = False  # post the result as a spoiler (an age-restricted channel that asks)
    count: int = 1  # images asked for: one job each, `units` each, charged all or none
    private: bool = False  # show the result to its member only (their /settings)
    locale: str | None = None  # the member's Discord locale: the language of its replies

    @property
    def total_units(self) -> int:
        return self.units * self.count


@dataclass(eq=False)
class Hold:
    """Units a command that passed its checks is about to charge (`JobLedger.hold`): counted by
    the checks of the commands after it until its charge is asked for, or it is released."""

    user_id: int
    guild_id: int | None
    day: str
    units: int


@dataclass(frozen=True)
class Job:
    """One generation, from the charge to the delivered image or the refund: a row of the
    ledger. Created by `JobService` when the units are reserved, read back after a restart to
    resume it, and kept afterwards as history (`/history`, `/server` reports). Its `state`
    says which side effect was last committed (see `JobState`)."""

    id: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    day: str
    units: int
    image: ImageRequest
    state: JobState
    task_id: str | None
    error: str | None
    created_at: float
    reply: ReplyTarget | None
    nonce: str  # random per job: Discord drops a second message with the same nonce
    callback_token: str = field(repr=False)  # random per job: the secret in its callback URL
    delivered_via: DeliveryRoute | None = None
    submitted_at: float | None = None  # Unix time createTask went out
    result_url: str | None = None  # link to the message showing the image
    origin: Origin = Origin.COMMAND
    parent_job_id: int | None = None
    quota_limit: int | None = None  # the member's daily limit when the job was charged
    deleted_at: float | None = None  # when the result message was deleted with its button
    spoiler: bool = False
    credits: float | None = None  # what kie.ai charged, when it said so
    image_url: str | None = None  # kie.ai's link the image was downloaded from (/history Show)
    delivered_at: float | None = None  # when it was delivered: how old kie.ai's copy is
    forgotten_at: float | None = None  # when the member had its words and links forgotten
    batch_id: int | None = None  # several images asked at once: the first job's id
    batch_index: int = 0  # this job's place in its batch, from 0
    batch_size: int = 1  # images in the batch (1: a single image, no batch)

    private: bool = False  # shown to its member only: ephemeral, or by DM, never in the channel
    locale: str | None = None  # the requester's Discord locale: every later text speaks it
    # The kie.ai account it was sent with (`bot.accounts`): OPERATOR_ACCOUNT, or a hash of a
    # server's own key; None until it is sent (and for jobs sent before this was recorded).
    kie_account: str | None = None

    @property
    def in_batch(self) -> bool:
        return self.batch_size > 1


class OverLimit(enum.StrEnum):
    """Why `JobLedger.reserve` charged nothing."""

    QUOTA = "quota"  # the member's daily quota (capped by the operator's ceiling)
    BUDGET = "budget"  # the server's own daily budget
    SERVER_CAP = "server_cap"  # the operator's daily cap for the server (DMs: for all DMs)
    TOTAL_CAP = "total_cap"  # the operator's daily cap over every server and DM


@dataclass(frozen=True)
class SpendLimits:
    """What one charge must stay within, each per UTC day; None: no limit."""

    member: int  # the member's limit from the server's policy; grants add to it
    member_ceiling: int | None = None  # the operator's MAX_MEMBER_DAILY, grants included
    server_budget: int | None = None  # the server's own budget (servers only)
    server_cap: int | None = None  # the operator's cap for the server, or for all DMs together
    total_cap: int | None = None  # the operator's cap over everything

    def member_limit(self, granted: int) -> int:
        """Today's limit with grants, never above the ceiling."""
        limit = self.member + granted
        return limit if self.member_ceiling is None else min(limit, self.member_ceiling)


@dataclass(frozen=True)
class Usage:
    used: int  # units charged today, since the last reset
    granted: int  # extra units granted for today


@dataclass(frozen=True)
class ServerPolicy:
    """A server's own settings; None everywhere means the bot's defaults."""

    daily_quota: int | None = None
    role_quotas: dict[int, int] = field(default_factory=dict)  # role id -> daily units
    daily_budget: int | None = None  # units for the whole server per day
    max_running_per_member: int | None = None
    max_running: int | None = None
    nsfw_allowed: bool = False  # kie.ai's filter may be off in age-restricted channels
    nsfw_spoiler: bool = False  # results in age-restricted channels are posted as spoilers
    default_model: Model | None = None  # /imagine's model when the member names none


# Images per request: one message holds their Vary and Use buttons in two rows of 4.
MAX_COUNT = 4


@dataclass(frozen=True)
class MemberDefaults:
    """A member's own defaults for `/imagine` in one server (or in direct messages).

    None means "not set": the shipped default applies, and an option typed in `/imagine` always
    wins. `private` sends the member's results to them alone; `model` and `count` fill
    `/imagine`'s options of the same names (the model before the server's choice).
    """

    aspect_ratio: AspectRatio | None = None
    resolution: Resolution | None = None
    private: bool = False
    model: str | None = None  # one of MODELS
    count: int | None = None  # 1 to MAX_COUNT

    def __post_init__(self) -> None:
        if self.model is not None and self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}")
        if self.count is not None and not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"count {self.count} is not 1 to {MAX_COUNT}")

    def options(
        self, aspect_ratio: str | None, resolution: str | None, *, reference: bool
    ) -> tuple[str, str]:
        """One request's shape and resolution: typed options win, then these defaults, then
        the shipped ones. With a reference image an untyped shape stays `auto` (match the
        reference): a member's usual shape would crop or stretch the picture they gave."""
        if aspect_ratio is None:
            aspect_ratio = AUTO_ASPECT_RATIO if reference else (self.aspect_ratio or "1:1")
        return aspect_ratio, resolution or self.resolution or "1K"


@dataclass(frozen=True)
class DayTotals:
    day: str
    delivered: int
    failed: int
    units: int


@dataclass(frozen=True)
class LogEntry:
    kind: LogKind
    user_id: int
    actor_id: int | None
    detail: str
    at: float


@dataclass(frozen=True)
class MemberTotals:
    user_id: int
    delivered: int
    units: int


@dataclass(frozen=True)
class ServerSpend:
    """One server's spending (guild_key 0: every direct message together)."""

    guild_key: int
    units_today: int
    units_month: int
    credits_month: float  # what kie.ai reported charging
    unreported_month: int  # images of the month whose cost kie.ai did not report


@dataclass(frozen=True)
class OwnerAction:
    actor_id: int
    action: str
    target: str
    detail: str
    at: float


class RefusedChange(enum.StrEnum):
    """Why an admin's (or the operator's) change was not made; the words are `bot/ui`'s."""

    QUOTA_OVER_CEILING = "quota_over_ceiling"  # limit: the operator's ceiling; asked
    BUDGET_OVER_CAP = "budget_over_cap"  # limit: the server's cap
    GRANT_OVER_CEILING = "grant_over_ceiling"  # limit: the ceiling; member_id, used: has today
    SERVER_TERMS_FULL = "server_terms_full"  # limit: terms a server may block
    BOT_TERMS_FULL = "bot_terms_full"  # limit: terms the operator may block
    BAN_SELF = "ban_self"
    TERM_TOO_LONG = "term_too_long"  # limit: characters
    TERM_TOO_SHORT = "term_too_short"  # limit: letters or digits


class ChangeRefused(Exception):
    """A change the rules do not allow (an operator's ceiling, a blocklist's size, banning
    oneself). Raised by the core before anything is stored; the bot's one error handler
    answers it privately, in words that say why and that nothing changed."""

    def __init__(
        self,
        reason: RefusedChange,
        *,
        limit: int = 0,
        asked: int = 0,
        used: int = 0,
        member_id: int | None = None,
    ) -> None:
        super().__init__(f"{reason.value} (limit {limit})")
        self.reason = reason
        self.limit = limit
        self.asked = asked
        self.used = used
        self.member_id = member_id


@dataclass(frozen=True)
class Departure:
    """A server the bot was removed from: when, and when its configuration was removed (None:
    still kept, for the grace period)."""

    guild_id: int
    left_at: float
    purged_at: float | None = None


@dataclass(frozen=True)
class RetiredKey:
    """A server's replaced or removed kie.ai key, still sealed, kept while jobs sent with it
    are open (`bot.accounts`); `fingerprint` is what those jobs recorded."""

    fingerprint: str
    guild_id: int
    sealed: str
    retired_at: float


@dataclass(frozen=True)
class SealedKey:
    """A server's own kie.ai key as stored: sealed (never in clear), its last four characters,
    and who set it when (`/server kie-key show`)."""

    guild_id: int
    sealed: str
    last_four: str
    set_by: int
    set_at: float
