"""What the core may ask of storage: one Protocol per table family, in domain types only.

The services type against these, never against the SQLite classes, so a second backend
(PostgreSQL) can implement the same Protocols without the core changing. `Storage` bundles one
of each; `bot.store.open_storage` is the one place that picks the backend.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.domain import (
    AdjustmentKind,
    DayTotals,
    DeliveryRoute,
    Departure,
    Hold,
    Job,
    JobState,
    LogEntry,
    LogKind,
    MemberDefaults,
    MemberTotals,
    Model,
    NewJob,
    OverLimit,
    OwnerAction,
    RetiredKey,
    SealedKey,
    ServerPolicy,
    ServerSpend,
    SpendLimits,
    TrayAdded,
    TrayImage,
    Usage,
)

# Settings an admin may change with one value each (`ServerSettings.set_policy_value` and
# `set_nsfw` take these names; they are `ServerPolicy`'s field names).
POLICY_SETTINGS = ("daily_quota", "daily_budget", "max_running_per_member", "max_running")
NSFW_SETTINGS = ("nsfw_allowed", "nsfw_spoiler")


class DatabaseInUse(Exception):
    """Another running bot process holds the database (its lock file, or on PostgreSQL its
    advisory lock): a second one would submit and deliver the same jobs twice."""


class BanList(enum.StrEnum):
    """The operator's two ban lists, each of ids that no server setting can lift."""

    USERS = "users"
    SERVERS = "servers"


class JobLedger(Protocol):
    """Every generation from the moment its units are charged, and the quota adjustments.

    A member's usage is the sum of their charged jobs, so charging is recording the job and
    refunding is a state change: the ledger cannot drift from the jobs. Each state transition
    happens at most once (False: it had already happened, or the job is elsewhere).
    """

    async def over_limit(
        self,
        user_id: int,
        guild_id: int | None,
        day: str,
        units: int,
        limits: SpendLimits,
        hold: Hold | None = None,
    ) -> OverLimit | None: ...
    def hold(self, user_id: int, guild_id: int | None, day: str, units: int) -> Hold: ...
    def release(self, hold: Hold) -> None: ...
    async def reserve(
        self, job: NewJob, limits: SpendLimits, hold: Hold | None = None
    ) -> Job | OverLimit: ...
    async def reserve_batch(
        self, job: NewJob, limits: SpendLimits, hold: Hold | None = None
    ) -> list[Job] | OverLimit: ...
    async def settle(self) -> None: ...
    async def usage(self, user_id: int, guild_id: int | None, day: str) -> Usage: ...
    async def server_units(self, guild_id: int | None, day: str) -> int: ...
    async def total_units(self, day: str) -> int: ...
    async def add_quota_adjustment(
        self, guild_id: int, user_id: int, day: str, kind: AdjustmentKind, units: int, actor: int
    ) -> None: ...
    async def total_units_charged(self) -> int: ...
    async def count_by_state(self) -> dict[JobState, int]: ...
    async def get_job(self, job_id: int) -> Job | None: ...
    async def batch_jobs(self, batch_id: int) -> list[Job]: ...
    async def open_jobs(self) -> list[Job]: ...
    async def recent_jobs(self, user_id: int, guild_id: int | None, limit: int) -> list[Job]: ...
    async def submissions_since(self, since: float) -> list[float]: ...
    async def recent_run_seconds(self, since: float, limit: int) -> list[float]: ...
    async def begin_submit(self, job_id: int, account: str | None = None) -> bool: ...
    async def mark_submitted(self, job_id: int, task_id: str) -> bool: ...
    async def adopt_task(self, job_id: int, task_id: str) -> bool: ...
    async def return_to_line(self, job_id: int) -> bool: ...
    async def begin_delivery(self, job_id: int, image_url: str | None = None) -> bool: ...
    async def mark_delivered(
        self,
        job_id: int,
        via: DeliveryRoute,
        url: str | None = None,
        image_url: str | None = None,
    ) -> bool: ...
    async def forget_history(self, user_id: int, guild_id: int | None, everywhere: bool) -> int: ...
    async def expire_history(self, before_day: str, batch: int = 5000) -> int: ...
    async def cancel(self, job_id: int, reason: str) -> bool: ...
    async def mark_batch_delivered(
        self, job_ids: list[int], via: DeliveryRoute, url: str | None = None
    ) -> bool: ...
    async def refund(self, job_id: int, reason: str) -> bool: ...
    async def set_input_urls(self, job_id: int, urls: tuple[str, ...]) -> None: ...
    async def set_job_credits(self, job_id: int, credits: float) -> None: ...
    async def mark_result_deleted(self, job_id: int) -> bool: ...
    async def daily_totals(self, guild_id: int, since_day: str) -> list[DayTotals]: ...
    async def top_members(
        self, guild_id: int, since_day: str, limit: int
    ) -> list[MemberTotals]: ...
    async def spend_by_server(
        self, today: str, month_start: str, only: int | None = None
    ) -> list[ServerSpend]: ...


class ServerSettings(Protocol):
    """A server's own settings: its policy numbers, role quotas, channels and audit channel."""

    async def server_policy(self, guild_id: int) -> ServerPolicy: ...
    async def set_policy_value(self, guild_id: int, name: str, value: int | None) -> None: ...
    async def set_nsfw(self, guild_id: int, name: str, value: bool) -> None: ...
    async def set_default_model(self, guild_id: int, model: Model | None) -> None: ...
    async def set_role_quota(self, guild_id: int, role_id: int, units: int | None) -> bool: ...
    async def set_audit_channel(self, guild_id: int, channel_id: int | None) -> None: ...
    async def audit_channel(self, guild_id: int) -> int | None: ...
    async def allow_channel(self, guild_id: int, channel_id: int) -> bool: ...
    async def disallow_channel(self, guild_id: int, channel_id: int) -> bool: ...
    async def allowed_channels(self, guild_id: int) -> list[int]: ...


class ModerationRecords(Protocol):
    """Blocked terms (per server and everywhere), member bans, the moderation log and the
    refusals counted per day."""

    async def add_blocked_term(
        self, guild_id: int, canonical: str, term: str, actor: int
    ) -> bool: ...
    async def remove_blocked_term(self, guild_id: int, canonical: str) -> bool: ...
    async def blocked_terms(self, guild_id: int) -> list[str]: ...
    async def add_global_term(self, canonical: str, term: str) -> bool: ...
    async def remove_global_term(self, canonical: str) -> bool: ...
    async def global_terms(self) -> list[str]: ...
    async def ban(self, guild_id: int, user_id: int, actor: int, reason: str | None) -> bool: ...
    async def unban(self, guild_id: int, user_id: int) -> bool: ...
    async def banned_members(self, guild_id: int) -> set[int]: ...
    async def servers_banning(self, user_id: int) -> list[int]: ...
    async def log_moderation(
        self, guild_id: int, user_id: int, kind: LogKind, detail: str, actor: int | None = None
    ) -> None: ...
    async def moderation_events(self, guild_id: int) -> list[tuple[str, int, str]]: ...
    async def admin_changes(self, guild_id: int, limit: int) -> list[LogEntry]: ...
    async def count_refusal(self, day: str, guild_key: int, reason: str) -> None: ...
    async def refusals_on(self, day: str) -> dict[int, dict[str, int]]: ...


class OperatorRecords(Protocol):
    """The operator's caps per server, bans everywhere, and the record of their actions."""

    async def server_caps(self) -> dict[int, int]: ...
    async def set_server_cap(self, guild_key: int, cap: int | None) -> None: ...
    async def ban_everywhere(self, banned: BanList, key: int, reason: str | None) -> bool: ...
    async def unban_everywhere(self, banned: BanList, key: int) -> bool: ...
    async def banned_everywhere(self, banned: BanList) -> set[int]: ...
    async def log_owner_action(self, actor: int, action: str, target: str, detail: str) -> None: ...
    async def owner_actions(self, limit: int) -> list[OwnerAction]: ...


class KeyValues(Protocol):
    """Small named values that must survive a restart (the pause, alert times, command
    fingerprints)."""

    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def with_prefix(self, prefix: str) -> dict[str, str]:
        """Every value whose key starts with `prefix` (not empty), by key."""
        ...

    async def compare_and_set(self, key: str, expected: str | None, value: str) -> bool:
        """Set `key` to `value` only if it is still `expected` (None: absent); True when this
        call changed it. Of several processes racing from the same value, exactly one wins."""
        ...


class JobLeases(Protocol):
    """Which process runs each open job, until when: a process claims a job before running it,
    renews its leases while it runs, and takes over jobs whose lease ran out (see
    `bot.leases`). `grace`: how long an open job nobody has claimed yet stays its charger's."""

    async def claim(self, job_id: int, owner: str, until: float, grace: float) -> bool: ...
    async def take_expired(
        self, owner: str, until: float, grace: float, limit: int
    ) -> list[int]: ...
    async def renew(self, owner: str, until: float) -> int: ...
    async def release(self, job_id: int, owner: str) -> None: ...
    async def release_all(self, owner: str) -> int: ...
    async def holder(self, job_id: int) -> str | None: ...


class RunSlots(Protocol):
    """Running slots shared by every process on the database (cluster mode, `bot.runslots`):
    a job holds one from leaving its line until it stops running; one counts only while its
    job's lease is live. `take_slot` returns which limit is full ("member" or "server"), or None
    once the slot is the job's."""

    async def take_slot(
        self,
        job_id: int,
        user_id: int,
        guild_id: int | None,
        per_member: int | None,
        per_server: int | None,
        wanted_fresh: float,
    ) -> Literal["member", "server"] | None: ...
    async def occupy_slot(self, job_id: int) -> None: ...
    async def release_slot(self, job_id: int, owner: str) -> None: ...
    async def running_slots(self, guild_id: int | None, user_id: int | None = None) -> int: ...


@dataclass(frozen=True)
class RateTaken:
    """A shared rate window's answer (`RateWindows.take`): the slot taken, if there was room,
    and the other calls (or holds) counted in it: for each, in how many seconds it leaves at
    the earliest, and how many slots it fills, soonest first. A call still on the wire leaves
    a window after it ends, so at the earliest in a window."""

    slot: int | None
    counted: tuple[tuple[float, int], ...]


class RateWindows(Protocol):
    """kie.ai's rate limits shared by every process (PostgreSQL): per account (a hash of its
    key) and kind of call, the calls made lately, timed by the database's clock. A slot counts
    from when it is taken until `window` after it is finished; one never finished (its process
    died) counts until `hold` after it was taken, and then not at all."""

    async def take(
        self, account: str, kind: str, waiter: str, max_calls: int, window: float, hold: float
    ) -> RateTaken:
        """A slot, unless the window is full or a `waiter` (process) refused earlier than this
        one still waits; a refused `waiter` keeps its place for its next take."""
        ...

    async def finish(self, slot: int, window: float) -> None: ...
    async def give_back(self, slot: int) -> None: ...
    async def push_back(self, account: str, kind: str, max_calls: int, seconds: float) -> None:
        """kie.ai said we were too fast: no slot for anyone for `seconds`."""
        ...


class ReferenceTrays(Protocol):
    """Each member's reference tray per server (guild_key 0: direct messages): images they
    picked with "Use as reference", for their next `/imagine`. Rows added at or before `since`
    are expired: never returned, and purged by the next `add`."""

    async def tray(self, user_id: int, guild_key: int, since: float) -> list[TrayImage]: ...
    async def add(
        self,
        user_id: int,
        guild_key: int,
        images: Sequence[TrayImage],
        since: float,
        room: int,
    ) -> TrayAdded: ...
    async def remove(self, user_id: int, guild_key: int, keys: Sequence[str]) -> None: ...


class MemberSettings(Protocol):
    """Each member's own defaults for /imagine, per server (guild None: direct messages)."""

    async def defaults(self, user_id: int, guild_id: int | None) -> MemberDefaults: ...
    async def set_defaults(
        self, user_id: int, guild_id: int | None, defaults: MemberDefaults
    ) -> None: ...
    async def clear_defaults(self, user_id: int, guild_id: int | None) -> bool: ...


class DepartedServers(Protocol):
    """Servers the bot was removed from, and removing what it kept for them: members' personal
    data at once, the server's configuration after a grace period (see `bot.departures`)."""

    async def record_departure(self, guild_id: int, at: float) -> bool: ...
    async def clear_departure(self, guild_id: int) -> bool: ...
    async def departures(self) -> list[Departure]: ...
    async def servers_with_data(self) -> set[int]: ...
    async def purge_personal(self, guild_id: int, batch: int = 5000) -> dict[str, int]: ...
    async def purge_configuration(self, guild_id: int, at: float) -> dict[str, int] | None: ...


class ServerKeys(Protocol):
    """Servers' own kie.ai keys, sealed (`bot.keyvault`): the store never sees one in clear."""

    async def server_key(self, guild_id: int) -> SealedKey | None: ...
    async def server_keys(self) -> list[SealedKey]: ...
    async def put_server_key(self, key: SealedKey) -> None: ...
    async def delete_server_key(self, guild_id: int) -> bool: ...
    async def retire_server_key(
        self, retired: RetiredKey, replacement: SealedKey | None
    ) -> bool: ...
    async def retired_keys(self) -> list[RetiredKey]: ...
    async def sweep_retired_keys(self) -> list[str]: ...


class WakeChannel(Protocol):
    """Bot processes sharing one database tell each other that kie.ai called back about a
    job (PostgreSQL's LISTEN/NOTIFY): the payload is the job's id alone."""

    async def publish(self, job_id: int) -> None: ...
    async def listen(self, on_wake: Callable[[int], None]) -> None:
        """Call `on_wake(job_id)` for each job any process published, until cancelled."""
        ...


class Backend(Protocol):
    """The storage itself: whether it can take a write now, its schema's version, keeping its
    query planner's statistics current, closing it (which brings them up to date first), and
    whether other bot processes may share it (PostgreSQL)."""

    several_processes: bool

    async def writable(self) -> bool: ...
    async def schema_version(self) -> int: ...
    async def optimize(self, *, starting: bool = False) -> None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class Storage:
    """Everything the bot keeps, one repository per table family.

    `open_storage` builds it once at start-up; the composition root hands each service only the
    repositories it needs, and closes it (after the bot has stopped) with `close()`.
    """

    jobs: JobLedger
    settings: ServerSettings
    moderation: ModerationRecords
    operator: OperatorRecords
    meta: KeyValues
    trays: ReferenceTrays
    members: MemberSettings
    departures: DepartedServers
    server_keys: ServerKeys
    leases: JobLeases
    run_slots: RunSlots
    backend: Backend
    # Callbacks that reach another process (PostgreSQL); None where one process runs every job.
    wakeups: WakeChannel | None = None
    # kie.ai's rate windows shared with other processes; None on SQLite (one process, whose
    # in-memory limiter is the whole truth).
    rate_windows: RateWindows | None = None

    async def writable(self) -> bool:
        return await self.backend.writable()

    async def optimize(self) -> None:
        """Refresh the query planner's statistics where they went stale (every few hours)."""
        await self.backend.optimize()

    async def close(self) -> None:
        await self.jobs.settle()  # charges asked for are committed (or refused) first
        await self.backend.close()
