"""Inline SVG charts: horizontal bar charts, drawn as plain ``<svg>`` markup.

No charting library: a chart here is a few dozen ``<rect>``/``<text>``/``<line>``
elements, a few KB, coloured by the page's CSS variables (so the light and the dark
theme restyle it), readable without JavaScript and searchable as text. Every string
that goes into the markup is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

WIDTH = 860  # viewBox width; the chart scales to its container
LABEL_W = 250  # left column for row labels
VALUE_W = 190  # right column for the value text
BAR_H = 14
GAP = 8
TOP = 22  # room for the legend


@dataclass
class Row:
    """One row: a label, one value per series (None: no bar), an optional threshold mark."""

    label: str
    values: Sequence[float | None]
    mark: float | None = None  # a threshold drawn as a tick across the row
    text: str | None = None  # value text (default: the formatted first value)
    state: str = ""  # "ok" / "bad" / "": colours the first series' bar
    title: str = ""  # tooltip


@dataclass
class Chart:
    rows: list[Row]
    series: Sequence[str] = ("value",)
    unit: str = ""
    log: bool = False  # log10 axis (errors spanning many decades)
    mark_label: str = ""  # legend text for the threshold marks
    caption: str = ""
    css_class: str = ""
    extra_legend: list[tuple[str, str]] = field(default_factory=list)  # (css class, text)
    tick_format: Callable[[float], str] | None = None  # axis labels (default: ``fmt``)


def short_label(label: str, n: int = 36) -> str:
    """A row label that fits the label column: the middle elided."""
    return label if len(label) <= n else label[: n // 2 - 1] + "…" + label[-(n // 2) :]


def fmt(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if v == 0:
        s = "0"
    elif abs(v) >= 1e5 or abs(v) < 1e-3:
        s = f"{v:.3g}"
    elif abs(v) >= 100:
        s = f"{v:,.0f}"
    else:
        s = f"{v:.4g}"
    return f"{s} {unit}".strip() if unit and unit not in ("x", "%") else s + unit


def _scale(values: list[float], log: bool) -> tuple[float, float]:
    """(lo, hi) of the axis: linear from 0, or whole decades in log."""
    pos = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if log:
        if not pos:
            return (0.0, 1.0)
        dlo = math.floor(math.log10(min(pos)))
        dhi = max(dlo + 1, math.ceil(math.log10(max(pos))))
        return (float(dlo), float(dhi))
    top = max([0.0, *(v for v in values if v is not None and math.isfinite(v))])
    if top <= 0:
        return (0.0, 1.0)
    step = nice_step(top)
    return (0.0, math.ceil(top / step - 1e-9) * step)


def nice_step(hi: float, ticks: int = 4) -> float:
    """A round tick step (1, 2, 2.5 or 5 x 10^k) giving at most ``ticks`` intervals up to ``hi``."""
    raw = hi / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def render(chart: Chart) -> str:
    """The chart as one ``<figure>`` holding an ``<svg>``; empty string when no row."""
    if not chart.rows:
        return ""
    n_series = max(1, len(chart.series))
    row_h = n_series * BAR_H + GAP
    height = TOP + len(chart.rows) * row_h + 18
    plot_w = WIDTH - LABEL_W - VALUE_W
    all_vals: list[float] = []
    for r in chart.rows:
        all_vals.extend(v for v in r.values if v is not None)
        if r.mark is not None:
            all_vals.append(r.mark)
    lo, hi = _scale(all_vals, chart.log)

    def x(v: float) -> float:
        if chart.log:
            if v <= 0 or not math.isfinite(v):
                return 0.0 if v <= 0 else plot_w
            return max(0.0, min(plot_w, (math.log10(v) - lo) / (hi - lo) * plot_w))
        if not math.isfinite(v):
            return plot_w
        return max(0.0, min(plot_w, v / hi * plot_w))

    out = [
        f'<figure class="chart {escape(chart.css_class)}">',
        f'<svg class="bars" role="img" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
    ]
    if chart.caption:
        out.append(f"<title>{escape(chart.caption)}</title>")
    # legend
    lx = LABEL_W
    legend: list[tuple[str, str]] = []
    if n_series > 1 or chart.series[0] != "value":
        legend += [(f"s{i}", name) for i, name in enumerate(chart.series)]
    if chart.mark_label:
        legend.append(("mark", chart.mark_label))
    legend += chart.extra_legend
    for cls, name in legend:
        if cls == "mark":
            out.append(f'<line class="mark" x1="{lx}" y1="4" x2="{lx}" y2="16"/>')
        else:
            out.append(f'<rect class="bar {escape(cls)}" x="{lx}" y="5" width="10" height="10" rx="2"/>')
        out.append(f'<text class="legend" x="{lx + 14}" y="14">{escape(name)}</text>')
        lx += 24 + 7 * len(name)
    # grid: ticks at decades (log) or quarters (linear)
    ticks = (
        [10.0**k for k in range(int(lo), int(hi) + 1)]
        if chart.log
        else [i * nice_step(hi) for i in range(round(hi / nice_step(hi)) + 1)]
    )
    base = height - 14
    tick = chart.tick_format or fmt
    for t in ticks:
        tx = LABEL_W + x(t)
        out.append(f'<line class="grid" x1="{tx:.1f}" y1="{TOP - 2}" x2="{tx:.1f}" y2="{base}"/>')
        out.append(f'<text class="tick" x="{tx:.1f}" y="{height - 3}">{escape(tick(t))}</text>')
    for i, r in enumerate(chart.rows):
        y0 = TOP + i * row_h
        tip = f"<title>{escape(r.title)}</title>" if r.title else ""
        label = short_label(r.label)
        out.append(
            f'<g class="row"><text class="label" x="{LABEL_W - 6}" y="{y0 + n_series * BAR_H / 2 + 4:.1f}">'
            f"{escape(label)}<title>{escape(r.label)}</title></text>"
        )
        for s, v in enumerate(r.values):
            if v is None or not v > 0:  # nothing to draw for 0 (no chart here has negatives)
                continue
            w = max(1.0, x(v))
            cls = f"bar s{s}" + (f" {r.state}" if s == 0 and r.state else "")
            out.append(
                f'<rect class="{escape(cls)}" x="{LABEL_W}" y="{y0 + s * BAR_H}" width="{w:.1f}" '
                f'height="{BAR_H - 2}" rx="2">{tip or f"<title>{escape(fmt(v, chart.unit))}</title>"}</rect>'
            )
        if r.mark is not None:
            mx = LABEL_W + x(r.mark)
            out.append(
                f'<line class="mark" x1="{mx:.1f}" y1="{y0 - 2}" x2="{mx:.1f}" y2="{y0 + n_series * BAR_H}">'
                f"<title>{escape(chart.mark_label)}: {escape(fmt(r.mark, chart.unit))}</title></line>"
            )
        text = r.text if r.text is not None else fmt(r.values[0] if r.values else None, chart.unit)
        out.append(
            f'<text class="value" x="{WIDTH - VALUE_W + 6}" y="{y0 + n_series * BAR_H / 2 + 4:.1f}">'
            f"{escape(text)}</text></g>"
        )
    out.append("</svg>")
    if chart.caption:
        out.append(f"<figcaption>{escape(chart.caption)}</figcaption>")
    out.append("</figure>")
    return "".join(out)
