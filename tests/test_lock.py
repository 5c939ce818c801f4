"""The lock files agree with pyproject.toml, the source of truth: every dependency it names is
pinned to one exact version inside its range, with hashes, in the lock that installs it (the
Docker image installs `requirements.lock`, CI `requirements-test.lock`). A dependency added to
pyproject without `scripts/lock` fails here, not in a build months later."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
REGENERATE = "run scripts/lock (see the README's Set-up)"

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    version: Version
    hashes: int


def read_lock(text: str) -> dict[str, Pin]:
    """A pip-compile lock: each `name==version \\` line and the `--hash` lines under it."""
    pins: dict[str, Pin] = {}
    name: str | None = None
    version: Version | None = None
    hashes = 0
    for line in [*text.splitlines(), "# end"]:
        match = _PIN.match(line)
        if match or not line.startswith(" "):
            if name is not None and version is not None:
                pins[name] = Pin(version, hashes)
            name, version, hashes = None, None, 0
        if match:
            name = canonicalize_name(match["name"])
            version = Version(match["version"])
        hashes += len(_HASH.findall(line))
    return pins


def _project() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        "runtime": [Requirement(r) for r in project["dependencies"]],
        "test": [Requirement(r) for r in project["optional-dependencies"]["test"]],
    }


def _disagreements(requirements: list[Requirement], pins: dict[str, Pin], lock: str) -> list[str]:
    wrong: list[str] = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not for this Python or platform
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            wrong.append(f"{requirement} is not pinned in {lock}")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            wrong.append(f"{requirement} does not allow {lock}'s {pin.version}")
    return wrong


def test_every_runtime_dependency_is_pinned_in_both_locks_within_its_range() -> None:
    runtime = _project()["runtime"]
    wrong = _disagreements(runtime, read_lock(RUNTIME_LOCK.read_text()), RUNTIME_LOCK.name)
    wrong += _disagreements(runtime, read_lock(TEST_LOCK.read_text()), TEST_LOCK.name)
    assert not wrong, f"{'; '.join(wrong)}: {REGENERATE}"


def test_every_test_dependency_is_pinned_in_the_test_lock_within_its_range() -> None:
    wrong = _disagreements(_project()["test"], read_lock(TEST_LOCK.read_text()), TEST_LOCK.name)
    assert not wrong, f"{'; '.join(wrong)}: {REGENERATE}"


def test_the_two_locks_pin_their_shared_packages_to_the_same_versions() -> None:
    runtime, test = read_lock(RUNTIME_LOCK.read_text()), read_lock(TEST_LOCK.read_text())
    differing = {
        name: (pin.version, test[name].version)
        for name, pin in runtime.items()
        if name in test and test[name].version != pin.version
    }
    assert not differing, f"the image and CI would run different versions: {differing}"
    assert runtime.keys() <= test.keys(), "CI must install everything the bot runs on"


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, TEST_LOCK], ids=lambda path: path.name)
def test_every_pin_carries_hashes(lock: Path) -> None:
    pins = read_lock(lock.read_text())
    assert pins, f"{lock.name} pins nothing"
    unhashed = sorted(name for name, pin in pins.items() if not pin.hashes)
    assert not unhashed, f"pip install --require-hashes would refuse: {unhashed}"


# The checks themselves, on locks written out here: they must catch what they promise to.
_LOCK_TEXT = """\
aiohttp==3.14.5 \\
    --hash=sha256:{h}
    # via imagine-bot (pyproject.toml)
discord-py==2.7.1 \\
    --hash=sha256:{h} \\
    --hash=sha256:{h}
pillow==9.5.0
""".replace("{h}", "0" * 64)


def test_a_lock_is_read_with_its_versions_and_hashes() -> None:
    pins = read_lock(_LOCK_TEXT)
    assert pins == {
        "aiohttp": Pin(Version("3.14.5"), 1),
        "discord-py": Pin(Version("2.7.1"), 2),
        "pillow": Pin(Version("9.5.0"), 0),
    }


@pytest.mark.parametrize(
    ("requirement", "problem"),
    [
        ("discord.py>=2.7,<3", None),  # names compare as pip does: discord.py is discord-py
        ("aiohttp>=3.9,<4", None),
        ("pillow>=10.1", "does not allow"),
        ("prometheus-client>=0.20", "is not pinned"),
        ("tomli>=2; python_version < '3.0'", None),  # a marker this Python does not meet
    ],
)
def test_a_disagreement_between_pyproject_and_a_lock_is_named(
    requirement: str, problem: str | None
) -> None:
    wrong = _disagreements([Requirement(requirement)], read_lock(_LOCK_TEXT), "x.lock")
    if problem is None:
        assert wrong == []
    else:
        assert len(wrong) == 1 and problem in wrong[0]
