"""Charts drawn on the server as SVG: nothing to load from anywhere, no script to run.

A stacked bar chart a day, one colour a series (the biggest series by total, the rest summed
as "other"), with its axis, day labels and a legend; every bar has a <title> tooltip.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

COLOURS = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
)  # fmt: skip
OTHER_COLOUR = "#bab0ac"
WIDTH, HEIGHT, LEFT, BOTTOM, TOP, LEGEND = 760, 260, 64, 28, 12, 150


def days_between(since: date, until: date) -> list[date]:
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


def series_by_day(rows: list[dict], value: str) -> dict[str, dict[date, float]]:
    """Turn rows of date, name and `value` into {name: {date: value}}."""
    series: dict[str, dict[date, float]] = defaultdict(dict)
    for row in rows:
        series[str(row["name"])][row["date"]] = row[value] or 0
    return series


def _biggest(series: dict[str, dict[date, float]]) -> list[tuple[str, dict[date, float], str]]:
    ranked = sorted(series.items(), key=lambda item: -sum(item[1].values()))
    shown = [(name, values, COLOURS[n]) for n, (name, values) in enumerate(ranked[: len(COLOURS)])]
    rest = ranked[len(COLOURS) :]
    if rest:
        other: dict[date, float] = defaultdict(float)
        for _, values in rest:
            for day, amount in values.items():
                other[day] += amount
        shown.append((f"other ({len(rest)})", other, OTHER_COLOUR))
    return shown


def _number(amount: float) -> str:
    if amount >= 1_000_000:
        return f"{amount / 1_000_000:.1f}M"
    if amount >= 1_000:
        return f"{amount / 1_000:.1f}k"
    return f"{amount:.4g}"


def stacked_bars(
    series: dict[str, dict[date, float]], days: list[date], *, label: str
) -> SafeString:
    """Return an SVG stacked bar chart of `series` a day over `days`; `label` names the unit."""
    layers = _biggest(series)
    totals = [sum(values.get(day, 0) for _, values, _ in layers) for day in days]
    peak = max(totals, default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - LEGEND, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(days), 1)
    bar = max(step * 0.8, 1)
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(label)}" '
        'xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" style="max-width:{WIDTH}px">',
    ]
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#666">{_number(peak * fraction)}</text>'
        )
    every = max(1, len(days) // 10)
    for n, day in enumerate(days):
        x = LEFT + n * step + (step - bar) / 2
        y = TOP + plot_h
        for name, values, colour in layers:
            amount = values.get(day, 0)
            if not amount:
                continue
            h = plot_h * amount / peak
            y -= h
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{day} {escape(name)}: {_number(amount)}</title></rect>'
            )
        if n % every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - 10}" font-size="10" '
                f'text-anchor="middle" fill="#666">{day:%m-%d}</text>'
            )
    for n, (name, _, colour) in enumerate(layers):
        y = TOP + n * 18
        parts.append(
            f'<rect x="{WIDTH - LEGEND + 10}" y="{y}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{WIDTH - LEGEND + 28}" y="{y + 10}" font-size="11">'
            f"{escape(name[:22])}</text>"
        )
    if not layers:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle" '
            'fill="#999">No usage in this range</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308  (every name in it is escaped above)
