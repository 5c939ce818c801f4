"""The schema's numbered migrations, and running them.

Migration N takes the schema from `user_version` N-1 to N. Each is a tuple of single SQL
statements, run in order inside one transaction together with the `user_version` bump, so a
migration is applied whole or not at all. Statements are never split at run time, so a `;`
inside a string literal or a trigger body is just text. Append only; never edit a shipped one
(changing how they are written down is fine as long as the resulting schema is the same, which
`tests/test_migrations.py` checks).
"""

from __future__ import annotations

from pathlib import Path

Migration = tuple[str, ...]

MIGRATIONS: tuple[Migration, ...] = (
    # 1: the job ledger and a key/value table.
    (
        """
        CREATE TABLE jobs (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id       INTEGER NOT NULL,
            guild_id      INTEGER,
            channel_id    INTEGER,
            day           TEXT    NOT NULL,
            units         INTEGER NOT NULL CHECK (units > 0),
            prompt        TEXT    NOT NULL,
            aspect_ratio  TEXT    NOT NULL,
            resolution    TEXT    NOT NULL,
            state         TEXT    NOT NULL,
            task_id       TEXT,
            error         TEXT,
            created_at    REAL    NOT NULL,
            updated_at    REAL    NOT NULL
        )
        """,
        "CREATE INDEX jobs_user_day ON jobs (user_id, day)",
        "CREATE INDEX jobs_state ON jobs (state)",
        """
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )
        """,
    ),
    # 2: what a job needs to find its requester again after a restart.
    (
        "ALTER TABLE jobs ADD COLUMN application_id   INTEGER",
        "ALTER TABLE jobs ADD COLUMN interaction_token TEXT",
        "ALTER TABLE jobs ADD COLUMN interaction_at   REAL",
        "ALTER TABLE jobs ADD COLUMN attachment_limit INTEGER",
        "ALTER TABLE jobs ADD COLUMN nonce            TEXT",
        "ALTER TABLE jobs ADD COLUMN callback_token   TEXT",
        "ALTER TABLE jobs ADD COLUMN submitted_at     REAL",
        "ALTER TABLE jobs ADD COLUMN delivered_via    TEXT",
    ),
    # 3: moderation. Every admin change and every refused prompt is kept in moderation_log.
    (
        """
        CREATE TABLE guild_settings (
            guild_id         INTEGER PRIMARY KEY,
            audit_channel_id INTEGER
        )
        """,
        """
        CREATE TABLE blocked_terms (
            guild_id   INTEGER NOT NULL,
            canonical  TEXT    NOT NULL,
            term       TEXT    NOT NULL,
            added_by   INTEGER NOT NULL,
            added_at   REAL    NOT NULL,
            PRIMARY KEY (guild_id, canonical)
        )
        """,
        """
        CREATE TABLE bans (
            guild_id   INTEGER NOT NULL,
            user_id    INTEGER NOT NULL,
            banned_by  INTEGER NOT NULL,
            reason     TEXT,
            banned_at  REAL    NOT NULL,
            PRIMARY KEY (guild_id, user_id)
        )
        """,
        """
        CREATE TABLE moderation_log (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            guild_id  INTEGER NOT NULL,
            user_id   INTEGER NOT NULL,
            actor_id  INTEGER,
            kind      TEXT    NOT NULL,
            detail    TEXT,
            at        REAL    NOT NULL
        )
        """,
        "CREATE INDEX moderation_log_guild ON moderation_log (guild_id, at)",
    ),
    # 4: a link to the message that shows each delivered image, for /history.
    ("ALTER TABLE jobs ADD COLUMN result_url TEXT",),
    # 5: channels where /imagine may be used (none listed: everywhere).
    (
        """
        CREATE TABLE allowed_channels (
            guild_id   INTEGER NOT NULL,
            channel_id INTEGER NOT NULL,
            PRIMARY KEY (guild_id, channel_id)
        )
        """,
    ),
    # 6: reference images and result buttons; per-server quota policy and running limits.
    # Quotas are counted per member per server from here on (guild_id IS NULL: direct messages).
    (
        "ALTER TABLE jobs ADD COLUMN reference_url  TEXT",
        "ALTER TABLE jobs ADD COLUMN input_url      TEXT",
        "ALTER TABLE jobs ADD COLUMN origin         TEXT NOT NULL DEFAULT 'command'",
        "ALTER TABLE jobs ADD COLUMN parent_job_id  INTEGER",
        "ALTER TABLE jobs ADD COLUMN quota_limit    INTEGER",
        "ALTER TABLE jobs ADD COLUMN deleted_at     REAL",
        "CREATE INDEX jobs_guild_day ON jobs (guild_id, day)",
        "ALTER TABLE guild_settings ADD COLUMN daily_quota            INTEGER",
        "ALTER TABLE guild_settings ADD COLUMN daily_budget           INTEGER",
        "ALTER TABLE guild_settings ADD COLUMN max_running_per_member INTEGER",
        "ALTER TABLE guild_settings ADD COLUMN max_running            INTEGER",
        """
        CREATE TABLE role_quotas (
            guild_id    INTEGER NOT NULL,
            role_id     INTEGER NOT NULL,
            daily_quota INTEGER NOT NULL,
            PRIMARY KEY (guild_id, role_id)
        )
        """,
        """
        CREATE TABLE quota_adjustments (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            guild_id  INTEGER,
            user_id   INTEGER NOT NULL,
            day       TEXT    NOT NULL,
            kind      TEXT    NOT NULL,
            units     INTEGER NOT NULL DEFAULT 0,
            actor_id  INTEGER,
            at        REAL    NOT NULL
        )
        """,
        "CREATE INDEX quota_adjustments_member ON quota_adjustments (user_id, guild_id, day)",
    ),
    # 7: the operator's controls for a public bot. Caps, bans and terms that no server setting
    # can lift; content safety per job; what kie.ai charged; refusals counted per reason.
    # guild_key is the server id, or 0 for direct messages (a key may not be NULL).
    (
        "ALTER TABLE jobs ADD COLUMN nsfw_checker INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE jobs ADD COLUMN spoiler      INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN credits      REAL",
        "CREATE INDEX jobs_day ON jobs (day)",
        "CREATE INDEX bans_user ON bans (user_id)",
        "ALTER TABLE guild_settings ADD COLUMN nsfw_allowed INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE guild_settings ADD COLUMN nsfw_spoiler INTEGER NOT NULL DEFAULT 0",
        """
        CREATE TABLE server_caps (
            guild_key  INTEGER PRIMARY KEY,
            daily_cap  INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE banned_users (
            user_id    INTEGER PRIMARY KEY,
            reason     TEXT
        )
        """,
        """
        CREATE TABLE banned_servers (
            guild_id   INTEGER PRIMARY KEY,
            reason     TEXT
        )
        """,
        """
        CREATE TABLE global_terms (
            canonical  TEXT PRIMARY KEY,
            term       TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE owner_log (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            actor_id   INTEGER NOT NULL,
            action     TEXT    NOT NULL,
            target     TEXT,
            detail     TEXT,
            at         REAL    NOT NULL
        )
        """,
        """
        CREATE TABLE refusal_counts (
            day        TEXT    NOT NULL,
            guild_key  INTEGER NOT NULL,
            reason     TEXT    NOT NULL,
            count      INTEGER NOT NULL,
            PRIMARY KEY (day, guild_key, reason)
        )
        """,
    ),
    # 8: every charge sums a server's and the whole day's units: covering indexes answer those
    # sums from the index alone (they replace the narrower ones).
    (
        "CREATE INDEX jobs_guild_day_spend ON jobs (guild_id, day, state, units)",
        "CREATE INDEX jobs_day_spend ON jobs (day, state, units)",
        "DROP INDEX jobs_guild_day",
        "DROP INDEX jobs_day",
    ),
    # 9: a year of history. /history reads a member's latest jobs in one server (without this
    # the planner walks the server's index, every job of a busy server); /quota and every
    # charge sum a member's day in one server from a covering index (it replaces the one on
    # member and day, which read a heavy member's every row of the day, or with sampled
    # statistics every job they ever had there); start-up reads the submissions of the last
    # seconds and the jobs still open (both were full scans). The partial index holds only open
    # jobs, a handful, however long the history; its states are `OPEN_STATES`, written out as
    # the queries that use it write them.
    (
        "CREATE INDEX jobs_member_history ON jobs (user_id, guild_id)",
        """
        CREATE INDEX jobs_member_day_spend
        ON jobs (user_id, guild_id, day, state, units, created_at)
        """,
        "DROP INDEX jobs_user_day",
        "CREATE INDEX jobs_submitted_at ON jobs (submitted_at)",
        """
        CREATE INDEX jobs_open ON jobs (state)
        WHERE state IN ('reserved', 'submitting', 'submitted', 'delivering')
        """,
    ),
    # 10: several reference images per job (the first stays in its own columns, the rest as a
    # JSON list), and each member's reference tray (per server; guild_key 0: direct messages),
    # whose images last an hour: `added_at` finds the expired ones to purge.
    (
        "ALTER TABLE jobs ADD COLUMN more_reference_urls TEXT",
        "ALTER TABLE jobs ADD COLUMN more_input_urls TEXT",
        """
        CREATE TABLE reference_tray (
            user_id    INTEGER NOT NULL,
            guild_key  INTEGER NOT NULL,
            image_key  TEXT    NOT NULL,
            url        TEXT    NOT NULL,
            filename   TEXT    NOT NULL,
            added_at   REAL    NOT NULL,
            PRIMARY KEY (user_id, guild_key, image_key)
        )
        """,
        "CREATE INDEX reference_tray_added ON reference_tray (added_at)",
    ),
    # 11: /history shows a result again from kie.ai's link, while kie.ai keeps it (counted
    # from the delivery); `/history forget` blanks a finished job's words and links and says
    # when, keeping its units, day and state (the ledger's totals).
    (
        "ALTER TABLE jobs ADD COLUMN image_url    TEXT",
        "ALTER TABLE jobs ADD COLUMN delivered_at REAL",
        "ALTER TABLE jobs ADD COLUMN forgotten_at REAL",
    ),
    # 12: models. Each job keeps the Flux-2 model that drew it (every earlier job was flex);
    # a server may choose the model /imagine uses when the member names none (NULL: flex).
    (
        "ALTER TABLE jobs ADD COLUMN model TEXT NOT NULL DEFAULT 'flex'",
        "ALTER TABLE guild_settings ADD COLUMN default_model TEXT",
    ),
    # 13: several images per request. The jobs of one request share a batch: its id (the first
    # job's), each one's place in it and its size; delivered together as one message.
    (
        "ALTER TABLE jobs ADD COLUMN batch_id    INTEGER",
        "ALTER TABLE jobs ADD COLUMN batch_index INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN batch_size  INTEGER NOT NULL DEFAULT 1",
        "CREATE INDEX jobs_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL",
    ),
    # 14: each member's own defaults per server (guild_key 0: direct messages), set with
    # /settings; NULL is "not set". model and count are kept for /imagine options to come.
    # A job remembers whether its result is private, so a resumed job is never posted publicly.
    (
        """
        CREATE TABLE member_defaults (
            user_id      INTEGER NOT NULL,
            guild_key    INTEGER NOT NULL,
            aspect_ratio TEXT,
            resolution   TEXT CHECK (resolution IN ('1K', '2K')),
            private      INTEGER NOT NULL DEFAULT 0,
            model        TEXT CHECK (model IN ('flex', 'pro')),
            count        INTEGER CHECK (count BETWEEN 1 AND 4),
            updated_at   REAL NOT NULL,
            PRIMARY KEY (user_id, guild_key)
        ) WITHOUT ROWID
        """,
        "ALTER TABLE jobs ADD COLUMN private INTEGER NOT NULL DEFAULT 0",
    ),
    # 15: HISTORY_DAYS finds the finished jobs to blank by day; the index holds only those not
    # forgotten yet, so it stays small as a year of history is blanked.
    ("CREATE INDEX jobs_unforgotten_day ON jobs (day) WHERE forgotten_at IS NULL",),
    # 16: the requester's Discord locale, so the replies a job posts later (progress, result,
    # failure, after a restart too) speak the language of the interaction that asked for it.
    ("ALTER TABLE jobs ADD COLUMN locale TEXT",),
    # 17: servers the bot left (removed, not an outage). Members' personal data there goes at
    # once; the server's configuration after a grace period, unless the bot is back by then
    # (the row goes); `purged_at` says it went. The indexes find one server's trays and member
    # defaults, whose keys start with the member.
    (
        """
        CREATE TABLE departed_servers (
            guild_id   INTEGER PRIMARY KEY,
            left_at    REAL NOT NULL,
            purged_at  REAL
        )
        """,
        "CREATE INDEX reference_tray_guild ON reference_tray (guild_key)",
        "CREATE INDEX member_defaults_guild ON member_defaults (guild_key)",
    ),
    # 18: a server's own kie.ai key (`/server kie-key`), sealed with a key derived from
    # SECRET_KEY (never in clear); its last four characters, who set it and when, for `show`.
    (
        """
        CREATE TABLE server_kie_keys (
            guild_id   INTEGER PRIMARY KEY,
            sealed     TEXT NOT NULL,
            last_four  TEXT NOT NULL,
            set_by     INTEGER NOT NULL,
            set_at     REAL NOT NULL
        )
        """,
    ),
    # 19: job leases (cluster mode): which process runs an open job, and until when its claim holds
    # unless renewed; an expired lease is taken over by another process (`bot.leases`).
    (
        "ALTER TABLE jobs ADD COLUMN lease_owner TEXT",
        "ALTER TABLE jobs ADD COLUMN lease_until REAL",
    ),
    # 20: global running slots (cluster mode, `bot.runslots`): `run_slot` is 1 while the job
    # counts against its member's and server's running limits in every process, which it does
    # only while its lease is live, so a dead process's slots free themselves; `run_wanted`,
    # when a job last found its server full (older ones go first, whichever process asks).
    # The partial indexes keep what admission reads to the few such rows of one server.
    (
        "ALTER TABLE jobs ADD COLUMN run_slot INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN run_wanted REAL",
        "CREATE INDEX jobs_run_slots ON jobs (guild_id, user_id) WHERE run_slot = 1",
        "CREATE INDEX jobs_run_wanted ON jobs (guild_id, id) WHERE run_wanted IS NOT NULL",
    ),
    # 21: kie.ai's rate limits shared by every process (PostgreSQL only; `bot.ratebudget`):
    # the calls each account (a hash of its key, never the key) made lately, per limit kind,
    # each counted until `counts_until` (the database's clock); `on_wire` while still sent;
    # and the processes waiting for a slot, in the order they were first refused.
    (
        """
        CREATE TABLE kie_rate_slots (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            account       TEXT    NOT NULL,
            kind          TEXT    NOT NULL,
            slots         INTEGER NOT NULL CHECK (slots > 0),
            counts_until  REAL    NOT NULL,
            on_wire       INTEGER NOT NULL
        )
        """,
        "CREATE INDEX kie_rate_slots_window ON kie_rate_slots (account, kind, counts_until)",
        # Processes refused a slot, since when: the one refused first goes first (a waiter
        # not seen again by `seen_until` is gone).
        """
        CREATE TABLE kie_rate_waiters (
            account     TEXT NOT NULL,
            kind        TEXT NOT NULL,
            waiter      TEXT NOT NULL,
            since       REAL NOT NULL,
            seen_until  REAL NOT NULL,
            PRIMARY KEY (account, kind, waiter)
        )
        """,
    ),
    # 22: the kie.ai account each job was sent with (`kie_account`: "operator", or a hash of a
    # server's key, never the key), so its later steps use that one whatever the server's key
    # is by then; and a server's replaced or removed key, still sealed, kept while jobs sent
    # with it are open (`bot.accounts`). The index finds a retired key's open jobs.
    (
        "ALTER TABLE jobs ADD COLUMN kie_account TEXT",
        "CREATE INDEX jobs_kie_account ON jobs (kie_account, state) WHERE kie_account IS NOT NULL",
        """
        CREATE TABLE retired_kie_keys (
            fingerprint  TEXT PRIMARY KEY,
            guild_id     INTEGER NOT NULL,
            sealed       TEXT NOT NULL,
            retired_at   REAL NOT NULL
        )
        """,
        "CREATE INDEX retired_kie_keys_guild ON retired_kie_keys (guild_id)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


class DatabaseTooNew(Exception):
    """The database was last migrated by a newer bot: this one would not understand it.

    The message is one sentence naming both versions and the file, safe to show the operator.
    """

    def __init__(self, path: Path | str, found: int, known: int) -> None:
        super().__init__(
            f"the database {path} is at schema version {found}, newer than this bot "
            f"(which knows up to {known}); upgrade the bot"
        )
        self.path = path
        self.found = found
        self.known = known
