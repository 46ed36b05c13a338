"""A tiny server-side SVG line chart (no JavaScript, no CDN): avg line over a min-max band."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from markupsafe import Markup


def _scale(value: float, lo: float, hi: float, out_lo: float, out_hi: float) -> float:
    if hi == lo:
        return (out_lo + out_hi) / 2
    return out_lo + (value - lo) * (out_hi - out_lo) / (hi - lo)


def svg_chart(
    points: Sequence[tuple[datetime, float | None, float | None, float | None]],
    *,
    title: str,
    unit: str = "",
    width: int = 640,
    height: int = 220,
    tz_label: str = "UTC",
) -> Markup:
    """Render (time, min, avg, max) points as an accessible inline SVG; empty data gives a labelled frame."""
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
    if v_lo == v_hi:
        v_lo, v_hi = v_lo - 1, v_hi + 1

    def x(t: datetime) -> float:
        return _scale(t.timestamp(), t0, t1, pad_l, width - pad_r)

    def y(v: float) -> float:
        return _scale(v, v_lo, v_hi, height - pad_b, pad_t)

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
