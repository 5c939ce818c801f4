"""A server's own settings in SQL: `guild_settings`, `role_quotas` and `allowed_channels`."""

from __future__ import annotations

from typing import Any

from bot.domain import Model, ServerPolicy, parse_model
from bot.readthrough import ReadThrough
from bot.store.interfaces import NSFW_SETTINGS, POLICY_SETTINGS
from bot.store.sql import SqlDatabase


class SqlServerSettings:
    """The `ServerSettings` over SQL: one row of settings per server, its role quotas and the
    channels `/imagine` may be used in.

    `QuotaBook` reads the policy on every request; `ServerAdmin` and `Moderation` change it from
    the admin commands. Built by `open_storage`; lives as long as the database.
    """

    # A policy is read several times per command (checks, charge, the line's limits): a burst
    # of thousands would read the same rows tens of thousands of times. Kept briefly, and
    # dropped on every change made through this repository, so a change applies at once.
    POLICY_KEPT_SECONDS = 2.0
    POLICIES_KEPT = 10_000

    def __init__(self, database: SqlDatabase) -> None:
        self._db = database
        self._policies = ReadThrough(
            self._read_policy, max_age=self.POLICY_KEPT_SECONDS, max_keys=self.POLICIES_KEPT
        )

    async def server_policy(self, guild_id: int) -> ServerPolicy:
        return await self._policies.get(guild_id)

    async def _read_policy(self, guild_id: int) -> ServerPolicy:
        # The setting names are `ServerPolicy`'s fields and the table's columns alike.
        columns = (*POLICY_SETTINGS, *NSFW_SETTINGS, "default_model")
        rows = await self._db.rows(
            f"SELECT {', '.join(columns)} FROM guild_settings WHERE guild_id = ?",
            (guild_id,),
        )
        roles = await self._db.rows(
            "SELECT role_id, daily_quota FROM role_quotas WHERE guild_id = ?", (guild_id,)
        )
        values: dict[str, Any] = {name: rows[0][name] for name in columns} if rows else {}
        for name in NSFW_SETTINGS:
            values[name] = bool(values.get(name))
        model = values.get("default_model")
        values["default_model"] = None if model is None else parse_model(model)
        return ServerPolicy(
            **values,
            role_quotas={int(row["role_id"]): int(row["daily_quota"]) for row in roles},
        )

    async def set_nsfw(self, guild_id: int, name: str, value: bool) -> None:
        if name not in NSFW_SETTINGS:
            raise ValueError(f"unknown server setting {name!r}")
        await self._set(guild_id, name, int(value))

    async def set_default_model(self, guild_id: int, model: Model | None) -> None:
        await self._set(guild_id, "default_model", model)

    async def set_policy_value(self, guild_id: int, name: str, value: int | None) -> None:
        if name not in POLICY_SETTINGS:
            raise ValueError(f"unknown server setting {name!r}")
        await self._set(guild_id, name, value)

    async def _set(self, guild_id: int, column: str, value: int | str | None) -> None:
        # `column` is one of the constant setting names, checked by the caller.
        await self._db.execute(
            f"INSERT INTO guild_settings (guild_id, {column}) VALUES (?, ?)"
            f" ON CONFLICT (guild_id) DO UPDATE SET {column} = excluded.{column}",
            (guild_id, value),
        )
        # After the write: a read under way before it could otherwise keep the old policy.
        self._policies.drop(guild_id)

    async def set_role_quota(self, guild_id: int, role_id: int, units: int | None) -> bool:
        """Set (or, with None, remove) a role's daily quota; False when nothing changed."""
        try:
            if units is None:
                return await self._db.changed(
                    "DELETE FROM role_quotas WHERE guild_id = ? AND role_id = ?",
                    (guild_id, role_id),
                )
            return await self._db.changed(
                "INSERT INTO role_quotas (guild_id, role_id, daily_quota) VALUES (?, ?, ?)"
                " ON CONFLICT (guild_id, role_id)"
                " DO UPDATE SET daily_quota = excluded.daily_quota",
                (guild_id, role_id, units),
            )
        finally:
            self._policies.drop(guild_id)

    async def set_audit_channel(self, guild_id: int, channel_id: int | None) -> None:
        await self._db.execute(
            "INSERT INTO guild_settings (guild_id, audit_channel_id) VALUES (?, ?)"
            " ON CONFLICT (guild_id)"
            " DO UPDATE SET audit_channel_id = excluded.audit_channel_id",
            (guild_id, channel_id),
        )

    async def audit_channel(self, guild_id: int) -> int | None:
        rows = await self._db.rows(
            "SELECT audit_channel_id FROM guild_settings WHERE guild_id = ?", (guild_id,)
        )
        channel = rows[0]["audit_channel_id"] if rows else None
        return int(channel) if channel is not None else None

    async def allow_channel(self, guild_id: int, channel_id: int) -> bool:
        return await self._db.changed(
            "INSERT INTO allowed_channels (guild_id, channel_id) VALUES (?, ?)"
            " ON CONFLICT DO NOTHING",
            (guild_id, channel_id),
        )

    async def disallow_channel(self, guild_id: int, channel_id: int) -> bool:
        return await self._db.changed(
            "DELETE FROM allowed_channels WHERE guild_id = ? AND channel_id = ?",
            (guild_id, channel_id),
        )

    async def allowed_channels(self, guild_id: int) -> list[int]:
        rows = await self._db.rows(
            "SELECT channel_id FROM allowed_channels WHERE guild_id = ? ORDER BY channel_id",
            (guild_id,),
        )
        return [int(row["channel_id"]) for row in rows]
