"""The `/server stats` chart: a server's daily generations as a small PNG bar chart.

Pure and deterministic (same days in, same bytes out). It takes a few milliseconds, but it is
still image work, so cogs call `render_daily_chart` through `asyncio.to_thread`. Only Pillow's
built-in font is used, so the Docker image needs no font files.
"""

from __future__ import annotations

import io
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from PIL import Image, ImageDraw, ImageFont

CHART_WIDTH = 640
CHART_HEIGHT = 320

# A dark card reads well on both Discord themes, and Discord's own palette makes the chart look
# at home next to the bot's embeds.
BACKGROUND = (43, 45, 49)  # #2B2D31
DELIVERED_COLOUR = (88, 101, 242)  # blurple #5865F2
FAILED_COLOUR = (237, 66, 69)  # red #ED4245
_TEXT = (242, 243, 245)
_MUTED = (181, 186, 193)
_BASELINE_COLOUR = (78, 80, 88)

_MARGIN = 24
_TITLE_SIZE = 18
_LABEL_SIZE = 13
_MAX_BAR_WIDTH = 48  # a single day should look like a bar, not a wall
_MIN_BAR_HEIGHT = 3  # a day with one generation among hundreds must still be visible
_GAP = 4

# Fixed English names: strftime("%a") follows the process locale, and the chart must not.
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class DayStats:
    """One day of a server's generations, oldest first when in a sequence."""

    day: date
    delivered: int
    failed: int
    units: int

    def __post_init__(self) -> None:
        if min(self.delivered, self.failed, self.units) < 0:
            raise ValueError(f"counts cannot be negative: {self!r}")

    @property
    def total(self) -> int:
        return self.delivered + self.failed


@dataclass(frozen=True)
class ChartLayout:
    """Where the bars go. Public so tests (and restyles) need no magic numbers."""

    day_count: int
    left: int = _MARGIN
    right: int = CHART_WIDTH - _MARGIN
    top: int = 76  # the tallest bar's top; title, legend and totals live above it
    baseline: int = 272  # bars stand on this line; day labels hang below it

    @property
    def slot_width(self) -> float:
        return (self.right - self.left) / max(self.day_count, 1)

    def slot_centre(self, index: int) -> float:
        return self.left + self.slot_width * (index + 0.5)

    def bar_span(self, index: int) -> tuple[int, int]:
        """The x range [start, end) of day `index`'s bar."""
        width = max(1, min(_MAX_BAR_WIDTH, round(self.slot_width * 0.6)))
        start = round(self.slot_centre(index) - width / 2)
        return start, start + width


def day_label(day: date) -> str:
    """The label under a bar, e.g. "Mon 23"."""
    return f"{_WEEKDAYS[day.weekday()]} {day.day}"


def render_daily_chart(days: Sequence[DayStats], *, title: str = "Image generations") -> bytes:
    """A CHART_WIDTH×CHART_HEIGHT PNG: one stacked bar (delivered, then failed) per day.

    The built-in font covers ASCII only, so the title is reduced to it ("Café" becomes "Cafe",
    emoji are dropped); a server's name belongs in the embed around the chart, not in it.
    """
    image = Image.new("RGB", (CHART_WIDTH, CHART_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, label_font = _default_font(_TITLE_SIZE), _default_font(_LABEL_SIZE)
    layout = ChartLayout(len(days))

    legend_left = _draw_legend(draw, days, label_font)
    title_room = legend_left - _MARGIN - 2 * _GAP
    title = _fit(draw, _drawable(title), title_font, title_room)
    draw.text((_MARGIN, 16), title, _TEXT, title_font)
    draw.line([(layout.left, layout.baseline), (layout.right, layout.baseline)], _BASELINE_COLOUR)
    _draw_bars(draw, days, layout, label_font)
    _draw_day_labels(draw, days, layout, label_font)
    if all(day.total == 0 for day in days):
        middle = (layout.left + layout.right) / 2
        note_top = (layout.top + layout.baseline - _TITLE_SIZE) / 2
        _draw_centred(draw, "No generations yet", note_top, _MUTED, middle, title_font)

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _default_font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow 10.0 has only the fixed-size bitmap font
        return ImageFont.load_default()


def _bar_heights(day: DayStats, peak: int, room: int) -> tuple[int, int]:
    """(delivered, failed) heights in pixels; each non-zero part gets at least one pixel."""
    if day.total == 0:
        return 0, 0
    height = max(_MIN_BAR_HEIGHT, round(room * day.total / peak))
    failed = round(height * day.failed / day.total)
    if day.failed:
        failed = max(1, failed)
    if day.delivered:
        failed = min(failed, height - 1)
    return height - failed, failed


def _draw_bars(
    draw: ImageDraw.ImageDraw, days: Sequence[DayStats], layout: ChartLayout, font: Font
) -> None:
    peak = max((day.total for day in days), default=0)
    room = layout.baseline - layout.top
    # Totals are shown for every day or for none, so a long range never looks half-labelled.
    widest_total = max((draw.textlength(str(day.total), font=font) for day in days), default=0)
    show_totals = widest_total <= layout.slot_width - 2
    for index, day in enumerate(days):
        start, end = layout.bar_span(index)
        delivered, failed = _bar_heights(day, peak, room) if peak else (0, 0)
        bottom = layout.baseline - 1
        if delivered:
            draw.rectangle([start, bottom - delivered + 1, end - 1, bottom], DELIVERED_COLOUR)
        if failed:
            draw.rectangle(
                [start, bottom - delivered - failed + 1, end - 1, bottom - delivered],
                FAILED_COLOUR,
            )
        if show_totals:
            top = layout.baseline - delivered - failed - _GAP - _LABEL_SIZE
            _draw_centred(draw, str(day.total), top, _TEXT, layout.slot_centre(index), font)


def _draw_day_labels(
    draw: ImageDraw.ImageDraw, days: Sequence[DayStats], layout: ChartLayout, font: Font
) -> None:
    # Over a long range, label every n-th day counting back from today, so today is labelled.
    widest = draw.textlength("Wed 30", font=font) + 2 * _GAP
    step = max(1, math.ceil(widest / layout.slot_width))
    for index, day in enumerate(days):
        if (len(days) - 1 - index) % step == 0:
            centre = layout.slot_centre(index)
            _draw_centred(draw, day_label(day.day), layout.baseline + 8, _MUTED, centre, font)


def _draw_legend(draw: ImageDraw.ImageDraw, days: Sequence[DayStats], font: Font) -> int:
    """Draw the legend right-aligned in the header; return its left edge."""
    entries = [
        (DELIVERED_COLOUR, f"delivered {sum(day.delivered for day in days)}"),
        (FAILED_COLOUR, f"failed {sum(day.failed for day in days)}"),
        (None, f"{sum(day.units for day in days)} units"),
    ]
    x = CHART_WIDTH - _MARGIN
    for swatch, text in reversed(entries):
        x -= round(draw.textlength(text, font=font))
        draw.text((x, 20), text, _TEXT if swatch else _MUTED, font)
        if swatch:
            x -= 10 + _GAP
            draw.rectangle([x, 23, x + 9, 32], swatch)
        x -= 3 * _GAP
    return x


def _draw_centred(
    draw: ImageDraw.ImageDraw,
    text: str,
    top: float,
    fill: tuple[int, int, int],
    centre: float,
    font: Font,
) -> None:
    # Left-anchored drawing with a measured width, because the bitmap fallback font of
    # Pillow 10.0 rejects the "m*" anchors.
    width = draw.textlength(text, font=font)
    draw.text((round(centre - width / 2), round(top)), text, fill, font)


def _drawable(text: str) -> str:
    """`text` in printable ASCII, since any other character would render as a box."""
    text = text.replace("\u2014", "-").replace("\u2013", "-")
    letters = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join("".join(c for c in letters if c.isprintable()).split())


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Font, width: float) -> str:
    """`text`, cut with an ellipsis to fit `width` (server names can be long)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "…"
