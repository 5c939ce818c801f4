"""The `/server stats` chart, checked by reading the pixels of the PNG it returns."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date, timedelta

import pytest
from PIL import Image

from bot.charts import (
    BACKGROUND,
    CHART_HEIGHT,
    CHART_WIDTH,
    DELIVERED_COLOUR,
    FAILED_COLOUR,
    ChartLayout,
    DayStats,
    day_label,
    render_daily_chart,
)

MONDAY = date(2025, 6, 23)
Colour = tuple[int, int, int]


def week(*counts: int | tuple[int, int]) -> list[DayStats]:
    """Days from MONDAY on; an int is delivered only, a pair is (delivered, failed)."""
    days = []
    for offset, count in enumerate(counts):
        delivered, failed = count if isinstance(count, tuple) else (count, 0)
        days.append(DayStats(MONDAY + timedelta(offset), delivered, failed, units=2 * delivered))
    return days


def render(days: Sequence[DayStats], **options: str) -> Image.Image:
    image = Image.open(io.BytesIO(render_daily_chart(days, **options)))
    image.load()
    return image.convert("RGB")


def colours_in(image: Image.Image, box: tuple[int, int, int, int]) -> dict[Colour, int]:
    """How many pixels of each colour lie in `box` (left, top, right, bottom; right/bottom open)."""
    region = image.crop(box)
    width, height = region.size
    return {colour: count for count, colour in region.getcolors(width * height) or []}


def bar_box(layout: ChartLayout, index: int) -> tuple[int, int, int, int]:
    start, end = layout.bar_span(index)
    return start, layout.top - 1, end, layout.baseline


def plot_box(layout: ChartLayout) -> tuple[int, int, int, int]:
    return layout.left, layout.top - 1, layout.right, layout.baseline


def bar_height(image: Image.Image, layout: ChartLayout, index: int) -> int:
    centre = sum(layout.bar_span(index)) // 2
    column = colours_in(image, (centre, layout.top - 1, centre + 1, layout.baseline))
    return column.get(DELIVERED_COLOUR, 0) + column.get(FAILED_COLOUR, 0)


def test_the_chart_is_a_png_of_the_advertised_size() -> None:
    data = render_daily_chart(week(3, 1, 4, 1, 5, 9, 2))

    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.size == (CHART_WIDTH, CHART_HEIGHT)


def test_bars_stand_on_the_days_with_generations_and_nowhere_else() -> None:
    days = week(5, 0, 10, 0, 3, 0, 0)
    image = render(days)
    layout = ChartLayout(len(days))

    for index, day in enumerate(days):
        delivered_pixels = colours_in(image, bar_box(layout, index)).get(DELIVERED_COLOUR, 0)
        if day.total:
            assert delivered_pixels > 0, day
        else:
            assert delivered_pixels == 0, day


def test_bar_heights_follow_the_counts() -> None:
    days = week(5, 10, 1)
    image = render(days)
    layout = ChartLayout(len(days))

    tallest = bar_height(image, layout, 1)
    assert tallest == layout.baseline - layout.top
    assert bar_height(image, layout, 0) == pytest.approx(tallest / 2, abs=1)
    assert 0 < bar_height(image, layout, 2) < bar_height(image, layout, 0)


def test_a_single_generation_among_many_is_still_visible() -> None:
    days = week(5000, 1)
    image = render(days)

    assert bar_height(image, ChartLayout(len(days)), 1) >= 2


def test_failures_are_stacked_on_top_of_deliveries() -> None:
    days = week(8, (6, 2), 4)
    image = render(days)
    layout = ChartLayout(len(days))

    start, end = layout.bar_span(1)
    middle = (start + end) // 2
    column = [image.getpixel((middle, y)) for y in range(layout.top - 1, layout.baseline)]
    bar = [colour for colour in column if colour in (DELIVERED_COLOUR, FAILED_COLOUR)]
    assert bar[0] == FAILED_COLOUR  # top of the bar
    assert bar[-1] == DELIVERED_COLOUR  # standing on the baseline
    assert bar.count(FAILED_COLOUR) == pytest.approx(len(bar) / 4, abs=1)
    for index in (0, 2):
        assert FAILED_COLOUR not in colours_in(image, bar_box(layout, index))


def test_the_failed_colour_is_absent_when_nothing_failed() -> None:
    days = week(8, 6, 4)
    image = render(days)

    assert FAILED_COLOUR not in colours_in(image, plot_box(ChartLayout(len(days))))


def test_a_day_of_only_failures_is_all_failed_colour() -> None:
    days = week(0, (0, 3))
    image = render(days)
    layout = ChartLayout(len(days))

    bar = colours_in(image, bar_box(layout, 1))
    assert bar.get(FAILED_COLOUR, 0) > 0
    assert DELIVERED_COLOUR not in bar


@pytest.mark.parametrize("days", [week(0, 0, 0, 0, 0, 0, 0), []], ids=["all zero", "no days"])
def test_a_server_without_generations_gets_a_note_instead_of_bars(
    days: list[DayStats],
) -> None:
    image = render(days)
    layout = ChartLayout(len(days))

    plot = colours_in(image, plot_box(layout))
    assert DELIVERED_COLOUR not in plot
    assert FAILED_COLOUR not in plot
    # The note sits mid-plot, clear of the "0" totals standing on the baseline.
    middle_band = (layout.left, layout.top, layout.right, layout.baseline - 40)
    assert sum(n for colour, n in colours_in(image, middle_band).items() if colour != BACKGROUND)


def test_the_note_is_not_shown_when_there_are_generations() -> None:
    days = week(0, 0, 1)
    image = render(days)
    layout = ChartLayout(len(days))

    # Left of the one bar, the middle of the plot is empty card.
    middle_band = (layout.left, layout.top, layout.bar_span(2)[0], layout.baseline - 40)
    assert set(colours_in(image, middle_band)) == {BACKGROUND}


def test_a_single_day_gets_one_centred_bar() -> None:
    days = week((4, 1))
    image = render(days)
    layout = ChartLayout(1)

    start, end = layout.bar_span(0)
    assert abs((start + end) - (layout.left + layout.right)) <= 1
    bar = colours_in(image, bar_box(layout, 0))
    assert bar.get(DELIVERED_COLOUR, 0) > bar.get(FAILED_COLOUR, 0) > 0
    outside = colours_in(image, (layout.left, layout.top - 1, start, layout.baseline))
    assert DELIVERED_COLOUR not in outside


def test_a_month_of_days_draws_every_bar() -> None:
    days = week(*range(1, 31))
    image = render(days)
    layout = ChartLayout(len(days))

    for index in range(len(days)):
        assert DELIVERED_COLOUR in colours_in(image, bar_box(layout, index)), index


def test_the_same_days_give_the_same_bytes() -> None:
    days = week((3, 1), 0, 7)

    assert render_daily_chart(days) == render_daily_chart(week((3, 1), 0, 7))


def test_accents_in_the_title_are_drawn_as_plain_letters_not_boxes() -> None:
    days = week(1, 2)

    assert render_daily_chart(days, title="Café stats") == render_daily_chart(
        days, title="Cafe stats"
    )


@pytest.mark.parametrize(
    ("day", "label"),
    [
        (date(2025, 6, 23), "Mon 23"),
        (date(2024, 2, 29), "Thu 29"),
        (date(2025, 1, 5), "Sun 5"),
    ],
)
def test_day_labels_read_weekday_and_day_of_month(day: date, label: str) -> None:
    assert day_label(day) == label


@pytest.mark.parametrize("field", ["delivered", "failed", "units"])
def test_negative_counts_are_refused(field: str) -> None:
    counts = {"delivered": 1, "failed": 1, "units": 1, field: -1}

    with pytest.raises(ValueError, match="negative"):
        DayStats(MONDAY, **counts)
