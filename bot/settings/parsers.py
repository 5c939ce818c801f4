"""How a setting's value is read: one small parser per kind, with the range the README shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from bot.settings.model import MAX_SECONDS_SETTING

T = TypeVar("T")


class Parser(Protocol[T]):
    """Reads one stripped, non-empty value or raises `ValueError`."""

    @property
    def expected(self) -> str:
        """Ends the sentence "NAME must be …" when a value is refused."""
        ...

    @property
    def limits(self) -> str:
        """The range as the README's table states it after the meaning; empty: none to state."""
        ...

    def read(self, raw: str) -> T: ...

    def show(self, value: T) -> str:
        """A value as it is written in `.env` (for showing defaults)."""
        ...


@dataclass(frozen=True)
class Text:
    expected: str = "some text"
    limits: str = ""

    def read(self, raw: str) -> str:
        return raw

    def show(self, value: str) -> str:
        return value


@dataclass(frozen=True)
class FilePath:
    expected: str = "a file path"
    limits: str = ""

    def read(self, raw: str) -> Path:
        return Path(raw)

    def show(self, value: Path) -> str:
        return str(value)


@dataclass(frozen=True)
class Url:
    expected: str = "a URL starting with http:// or https://"
    limits: str = ""

    def read(self, raw: str) -> str:
        if not raw.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError(raw)
        return raw.rstrip("/")

    def show(self, value: str) -> str:
        return value


@dataclass(frozen=True)
class DatabaseUrl:
    """A PostgreSQL connection URL (it may carry a password: the setting is a secret)."""

    expected: str = "a URL starting with postgresql:// or postgres://"
    limits: str = ""

    def read(self, raw: str) -> str:
        if not raw.startswith(("postgresql://", "postgres://")):
            raise ValueError("not a PostgreSQL URL")  # never the value: it may hold a password
        return raw

    def show(self, value: str) -> str:
        return value


@dataclass(frozen=True)
class Whole:
    """A whole number from `minimum` to `maximum`, stored multiplied by `scale`."""

    minimum: int
    maximum: int
    scale: int = 1

    @property
    def expected(self) -> str:
        return f"a whole number from {self.minimum} to {self.maximum:,}"

    @property
    def limits(self) -> str:
        return f"{self.minimum} to {self.maximum:,}."

    def read(self, raw: str) -> int:
        value = int(raw)
        if not self.minimum <= value <= self.maximum:
            raise ValueError(raw)
        return value * self.scale

    def show(self, value: int) -> str:
        return str(value // self.scale)


@dataclass(frozen=True)
class Amount:
    """A number of `unit`, fractions allowed, from `minimum` to `maximum`."""

    unit: str
    minimum: int
    maximum: int

    @property
    def expected(self) -> str:
        return f"a number of {self.unit} from {self.minimum} to {self.maximum:,}"

    @property
    def limits(self) -> str:
        return f"{self.minimum} to {self.maximum:,}."

    def read(self, raw: str) -> float:
        value = float(raw)
        if not self.minimum <= value <= self.maximum:  # also refuses nan
            raise ValueError(raw)
        return value

    def show(self, value: float) -> str:
        return f"{value:g}"


@dataclass(frozen=True)
class Seconds:
    maximum: float = MAX_SECONDS_SETTING

    @property
    def expected(self) -> str:
        return f"a number of seconds above 0 and at most {self.maximum:.0f}"

    @property
    def limits(self) -> str:
        return f"Above 0, at most {self.maximum:.0f}."

    def read(self, raw: str) -> float:
        value = float(raw)
        if not 0 < value <= self.maximum:  # also refuses nan
            raise ValueError(raw)
        return value

    def show(self, value: float) -> str:
        return f"{value:g}"


@dataclass(frozen=True)
class Port:
    expected: str = "a port number from 1 to 65535, or 0 to turn the server off"
    limits: str = "0 to 65535."

    def read(self, raw: str) -> int:
        value = int(raw)
        if not 0 <= value <= 65535:
            raise ValueError(raw)
        return value

    def show(self, value: int) -> str:
        return str(value)


@dataclass(frozen=True)
class Choice:
    """One of `choices`, in any case; the meaning in the README names them."""

    choices: tuple[str, ...]
    limits: str = ""

    @property
    def expected(self) -> str:
        return f"one of {', '.join(self.choices)}"

    def read(self, raw: str) -> str:
        for choice in self.choices:
            if raw.lower() == choice.lower():
                return choice
        raise ValueError(raw)

    def show(self, value: str) -> str:
        return value


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class Flag:
    expected: str = "true or false"
    limits: str = ""

    def read(self, raw: str) -> bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(raw)

    def show(self, value: bool) -> str:
        return "true" if value else "false"


@dataclass(frozen=True)
class Snowflake:
    """A Discord ID of a `what` (server, channel)."""

    what: str = "server"
    limits: str = ""

    @property
    def expected(self) -> str:
        return f"a Discord {self.what} ID (digits only)"

    def read(self, raw: str) -> int:
        if not raw.isdigit():
            raise ValueError(raw)
        return int(raw)

    def show(self, value: int) -> str:
        return str(value)


@dataclass(frozen=True)
class Snowflakes:
    expected: str = "Discord server IDs (digits) separated by commas"
    limits: str = ""

    def read(self, raw: str) -> frozenset[int]:
        parts = [part.strip() for part in raw.split(",") if part.strip()]
        if not all(part.isdigit() for part in parts):
            raise ValueError(raw)
        return frozenset(int(part) for part in parts)

    def show(self, value: frozenset[int]) -> str:
        return ",".join(str(part) for part in sorted(value))


@dataclass(frozen=True)
class ShardIds:
    """Discord shard numbers, like `0,1`."""

    expected: str = "shard numbers (0, 1, …) separated by commas"
    limits: str = ""

    def read(self, raw: str) -> tuple[int, ...]:
        parts = [part.strip() for part in raw.split(",") if part.strip()]
        if not parts or not all(part.isdigit() for part in parts):
            raise ValueError(raw)
        return tuple(sorted({int(part) for part in parts}))

    def show(self, value: tuple[int, ...]) -> str:
        return ",".join(str(part) for part in value)


@dataclass(frozen=True)
class Hosts:
    expected: str = "host names separated by commas"
    limits: str = ""

    def read(self, raw: str) -> frozenset[str]:
        return frozenset(host.strip().lower() for host in raw.split(",") if host.strip())

    def show(self, value: frozenset[str]) -> str:
        return ",".join(sorted(value))


# --- the declaration --------------------------------------------------------------------------
