"""A tiny server-side SVG line chart (no JavaScript, no CDN): avg line over a min-max band."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape

from markupsafe import Markup


def _scale(value: float, lo: float, hi: float, out_lo: float, out_hi: float) -> float:
    if hi == lo:
        return (out_lo + out_hi) / 2
    return out_lo + (value - lo) * (out_hi - out_lo) / (hi - lo)


# Marks on a chart (issue 22): a threshold (value, label); an alarm span (start, end or None while open, label,
# css class such as sev-critical); an event such as a ledger entry (time, label).
Threshold = tuple[float, str]
Span = tuple[datetime, datetime | None, str, str]
Event = tuple[datetime, str]


def _marks(
    x: Callable[[float], float],
    y: Callable[[float], float],
    box: tuple[float, float, float, float],
    thresholds: Sequence[Threshold],
    spans: Sequence[Span],
    events: Sequence[Event],
) -> list[str]:
    """Alarm spans (shaded, behind), thresholds (dashed, labelled) and events (ticks with a title) in SVG."""
    left, top, right, bottom = box
    parts = []
    for start, end, label, css in spans:
        x0 = max(left, min(right, x(start.timestamp())))
        x1 = max(left, min(right, x(end.timestamp()) if end is not None else right))
        parts.append(
            f'<rect class="span {escape(css)}" x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 2):.1f}" '
            f'height="{bottom - top}"><title>{escape(label)}</title></rect>'
        )
    for value, label in thresholds:
        parts.append(
            f'<line class="threshold" x1="{left}" x2="{right}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="#8e44ad" stroke-dasharray="6 4" stroke-width="1.5"><title>{escape(label)}</title></line>'
            f'<text class="threshold-label" x="{right - 4}" y="{y(value) - 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#8e44ad">{escape(label)}</text>'
        )
    for at, label in events:
        xe = x(at.timestamp())
        if left <= xe <= right:
            parts.append(
                f'<g class="event"><line x1="{xe:.1f}" x2="{xe:.1f}" y1="{top}" y2="{bottom}" stroke="#1f3a5f" '
                f'stroke-width="1" stroke-dasharray="2 3"/><circle cx="{xe:.1f}" cy="{top + 6}" r="4" '
                f'fill="#1f3a5f"/><title>{escape(label)}</title></g>'
            )
    return parts


def svg_chart(
    points: Sequence[tuple[datetime, float | None, float | None, float | None]],
    *,
    title: str,
    unit: str = "",
    width: int = 640,
    height: int = 220,
    tz_label: str = "UTC",
    thresholds: Sequence[Threshold] = (),
    spans: Sequence[Span] = (),
    events: Sequence[Event] = (),
) -> Markup:
    """Render (time, min, avg, max) points as an accessible inline SVG, with alarm thresholds, alarm spans and
    events marked; empty data gives a labelled frame."""
    pad_l, pad_r, pad_t, pad_b = 48, 12, 14, 28
    data = [(t, lo, avg, hi) for t, lo, avg, hi in points if avg is not None]
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<rect x="{pad_l}" y="{pad_t}" width="{width - pad_l - pad_r}" height="{height - pad_t - pad_b}" '
        f'fill="none" stroke="#999" stroke-width="1"/>',
    ]
    if not data:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" fill="#666" '
            f'font-size="14">—</text></svg>'
        )
        return Markup("".join(parts))  # noqa: S704 - every interpolated value is escaped or numeric
    t0, t1 = data[0][0].timestamp(), data[-1][0].timestamp()
    v_lo = min(lo if lo is not None else avg for _, lo, avg, _ in data)
    v_hi = max(hi if hi is not None else avg for _, _, avg, hi in data)
    # thresholds stay in view, so a reading's distance from its alarm level can be seen
    v_lo = min([v_lo, *(v for v, _ in thresholds)])
    v_hi = max([v_hi, *(v for v, _ in thresholds)])
    if v_lo == v_hi:
        v_lo, v_hi = v_lo - 1, v_hi + 1

    def x(t: datetime) -> float:
        return _scale(t.timestamp(), t0, t1, pad_l, width - pad_r)

    def y(v: float) -> float:
        return _scale(v, v_lo, v_hi, height - pad_b, pad_t)

    parts += _marks(
        lambda ts: _scale(ts, t0, t1, pad_l, width - pad_r),
        y,
        (pad_l, pad_t, width - pad_r, height - pad_b),
        thresholds,
        spans,
        events,
    )
    upper = [f"{x(t):.1f},{y(hi if hi is not None else avg):.1f}" for t, _, avg, hi in data]
    lower = [f"{x(t):.1f},{y(lo if lo is not None else avg):.1f}" for t, lo, avg, _ in reversed(data)]
    line = [f"{x(t):.1f},{y(avg):.1f}" for t, _, avg, _ in data]
    parts.append(f'<polygon points="{" ".join(upper + lower)}" fill="#f4b183" fill-opacity="0.45" stroke="none"/>')
    parts.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="#c0392b" stroke-width="2"/>')
    for v in (v_lo, (v_lo + v_hi) / 2, v_hi):
        parts.append(
            f'<text x="{pad_l - 4}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11" fill="#333">{v:.4g}</text>'
        )
    for t in (data[0][0], data[-1][0]):
        anchor = "start" if t == data[0][0] else "end"
        parts.append(
            f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="{anchor}" font-size="11" fill="#333">'
            f"{escape(t.strftime('%m-%d %H:%M'))} {escape(tz_label)}</text>"
        )
    parts.append(f'<text x="{pad_l + 4}" y="{pad_t + 12}" font-size="11" fill="#333">{escape(unit)}</text></svg>')
    return Markup("".join(parts))  # noqa: S704 - every interpolated value is escaped or numeric


def svg_bars(bars: Sequence[tuple[str, int]], *, title: str, width: int = 640, height: int = 180) -> Markup:
    """Counts as an accessible inline SVG bar chart (e.g. alarms per day), each bar titled with its label."""
    pad_l, pad_r, pad_t, pad_b = 36, 8, 12, 26
    top = max((n for _, n in bars), default=0) or 1
    inner = width - pad_l - pad_r
    step = inner / max(len(bars), 1)
    parts = [
        f'<svg class="chart bars" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{height - pad_b}" y2="{height - pad_b}" stroke="#999"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end" font-size="11" fill="#333">{top}</text>',
    ]
    for i, (label, n) in enumerate(bars):
        h = (height - pad_t - pad_b) * n / top
        parts.append(
            f'<rect class="bar" data-label="{escape(label)}" data-n="{n}" x="{pad_l + i * step + 1:.1f}" '
            f'y="{height - pad_b - h:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}" fill="#c0392b">'
            f"<title>{escape(label)}: {n}</title></rect>"
        )
    for i in sorted({0, len(bars) - 1}) if bars else []:
        anchor = "start" if i == 0 else "end"
        xl = pad_l + i * step + (0 if i == 0 else step)
        parts.append(
            f'<text x="{xl:.1f}" y="{height - 8}" text-anchor="{anchor}" font-size="11" fill="#333">'
            f"{escape(bars[i][0])}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated value is escaped or numeric
