"""A report as tables (names, not ids, in zh-CN or English), written as CSV, XLSX (openpyxl) or PDF (reportlab,
with a Chinese font and charts). Every format carries the same tables."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from core.errors import ConfigError
from core.names import alarm_name, lang_of, severity_name
from report.labels import label
from report.service import Report

Format = Literal["pdf", "xlsx", "csv"]
FORMATS: tuple[Format, ...] = ("pdf", "xlsx", "csv")
MEDIA_TYPES: dict[str, str] = {
    "pdf": "application/pdf",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
}
Cell = str | int | float | None
# Debian's fonts-wqy-microhei (scripts/setup and the Dockerfile install it); GRIDWATCH_REPORT_FONT overrides.
CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/wqy-microhei/wqy-microhei.ttc",
)
FONT_NAME = "GridwatchCJK"


@dataclass(frozen=True, slots=True)
class Table:
    """One section of a report."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[Cell]]


def _secs(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def title_of(report: Report, lang: str) -> str:
    """'Monthly safety report — Community Lotus Pond — 2026-11'."""
    scope = report.scope
    where = label("street", lang) if scope.kind == "street" else f"{label(scope.kind, lang)} {report.scope_name}"
    kind, title = label(report.period.kind, lang), label("title", lang)
    heading = f"{kind}{title}" if lang_of(lang) == "zh-CN" else f"{kind} {title.lower()}"
    return f"{heading} · {where} · {report.period.label}"


def _summary(report: Report, lang: str) -> Table:
    k = report.kpis
    figures: list[tuple[str, Cell]] = [
        ("alarms", k.alarms),
        ("acknowledged", k.acknowledged),
        ("resolved", k.resolved),
        ("ack_p50", _secs(k.ack_p50)),
        ("ack_p90", _secs(k.ack_p90)),
        ("resolve_p50", _secs(k.resolve_p50)),
        ("resolve_p90", _secs(k.resolve_p90)),
        ("unreached", k.unreached),
        ("devices", k.devices),
        ("offline", k.offline),
        ("never_seen", k.never_seen),
        ("not_commissioned", k.not_commissioned),
        ("merchants", len(report.merchants)),
    ]
    # The period's first and last local day, both included (its end is exclusive: 1 December ends November).
    days = report.period.days()
    span = days[0].isoformat() if len(days) == 1 else f"{days[0]} – {days[-1]}"
    rows: list[list[Cell]] = [[label("period", lang), span]]
    if report.communities:
        rows.append([label("community", lang), "、".join(name for _, name in report.communities)])
    rows += [[label(key, lang), value] for key, value in figures]
    return Table("summary", label("summary", lang), [label("figure", lang), label("value", lang)], rows)


def _responses(report: Report, lang: str, *, per_person: bool) -> Table:
    rows: list[list[Cell]] = []
    for r in report.responses:
        if r.per_person != per_person:
            continue
        who = [r.name or r.actor or "—"] if per_person else []
        rows.append([*who, label(r.tier, lang), label(r.what, lang), r.n, _secs(r.p50), _secs(r.p90)])
    first = [label("person", lang)] if per_person else []
    headers = [*first, label("tier", lang), label("action", lang), label("count", lang), label("p50", lang)]
    key = "responses_person" if per_person else "responses_tier"
    return Table(key, label(key, lang), [*headers, label("p90", lang)], rows)


def _figures(key: str, lang: str, figures: list[tuple[str, Cell]]) -> Table:
    return Table(
        key, label(key, lang), [label("figure", lang), label("value", lang)], [[label(k, lang), v] for k, v in figures]
    )


def _field_work(report: Report, lang: str) -> list[Table]:
    """Work orders, patrol coverage and drills (the work on foot, issue 21)."""
    w, d = report.work_orders, report.drills
    orders = _figures(
        "work_orders",
        lang,
        [
            ("wo_opened", w.opened),
            ("wo_closed", w.closed),
            ("wo_overdue", w.overdue),
            ("reinspections_passed", w.reinspections_passed),
            ("reinspections_failed", w.reinspections_failed),
        ],
    )
    patrols = Table(
        "patrols",
        label("patrols", lang),
        [label(k, lang) for k in ("round_kind", "stops_due", "stops_visited", "stops_checked")]
        + [label("stops_not_home", lang), label("stops_missed", lang)],
        [[label(f"round_{p.kind}", lang), p.due, p.visited, p.checked, p.not_home, p.missed] for p in report.patrols],
    )
    drills = _figures(
        "drills",
        lang,
        [
            ("drills_dispatched", d.drills),
            ("drill_workers", d.dispatched),
            ("drill_acknowledged", d.acknowledged),
            ("drill_arrived", d.arrived),
            ("drill_ack_p50", _secs(d.ack_p50)),
            ("drill_ack_p90", _secs(d.ack_p90)),
            ("drill_arrive_p50", _secs(d.arrive_p50)),
            ("drill_arrive_p90", _secs(d.arrive_p90)),
        ],
    )
    return [orders, patrols, drills]


def tables(report: Report, lang: str) -> list[Table]:
    """The report's sections, in the reader's language."""
    by_type = Table(
        "by_type",
        label("by_type", lang),
        [label("type", lang), label("severity", lang), label("count", lang)],
        [[alarm_name(t, lang), severity_name(s, lang), n] for t, s, n in report.by_type_severity],
    )
    per_day = Table(
        "per_day",
        label("per_day", lang),
        [label("date", lang), label("count", lang)],
        [[d.isoformat(), report.per_day.get(d, 0)] for d in report.period.days()],
    )
    tiers = Table(
        "tiers",
        label("tiers", lang),
        [label("tier", lang), label("merchants", lang)],
        [[tier, n] for tier, n in report.tiers.items()],
    )
    scores = Table(
        "scores",
        label("scores", lang),
        [
            label("merchant", lang),
            label("score", lang),
            label("tier", lang),
            label("entries", lang),
            label("points", lang),
        ],
        [[m.name, m.score, m.tier, m.entries, m.points] for m in report.merchants],
    )
    return [
        _summary(report, lang),
        by_type,
        per_day,
        _responses(report, lang, per_person=False),
        _responses(report, lang, per_person=True),
        *_field_work(report, lang),
        tiers,
        scores,
    ]


def render(report: Report, fmt: Format, lang: str) -> bytes:
    """The report as a file's bytes."""
    if fmt == "csv":
        return to_csv(report, lang)
    if fmt == "xlsx":
        return to_xlsx(report, lang)
    return to_pdf(report, lang)


def filename(report: Report, fmt: Format) -> str:
    """gridwatch-community-c1-2026-11.pdf"""
    who = report.scope.kind if report.scope.id is None else f"{report.scope.kind}-{report.scope.id}"
    return f"gridwatch-{who}-{report.period.label}.{fmt}".replace("_", "-")


# A cell a spreadsheet program would run as a formula (a merchant named "=HYPERLINK(...)"): OWASP's CSV injection.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(cell: Cell) -> Cell:
    """Text that would start a formula is written with a leading apostrophe, as a spreadsheet shows text."""
    if cell is None:
        return ""
    if isinstance(cell, str) and cell.startswith(FORMULA_START):
        return "'" + cell
    return cell


def to_csv(report: Report, lang: str) -> bytes:
    """Sections one after another, each opened by its title, with a blank line between (UTF-8 with a BOM, so
    spreadsheet programs read the Chinese)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([_csv_cell(title_of(report, lang))])
    for table in tables(report, lang):
        writer.writerow([])
        writer.writerow([table.title])
        writer.writerow(table.headers)
        writer.writerows([_csv_cell(c) for c in row] for row in table.rows)
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _xlsx_cell(cell: Cell) -> Cell:
    """A cell an XLSX sheet can hold: control characters (which the format cannot store, and openpyxl refuses) in
    a name written through the API are shown as U+FFFD rather than failing the whole report."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    return ILLEGAL_CHARACTERS_RE.sub("\ufffd", cell) if isinstance(cell, str) else cell


def to_xlsx(report: Report, lang: str) -> bytes:
    """One sheet per section."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    first = True
    for table in tables(report, lang):
        sheet = book.active if first else book.create_sheet()
        assert sheet is not None  # noqa: S101 - a new workbook has an active sheet
        sheet.title = table.title[:31]
        first = False
        if table.key == "summary":
            sheet.append([_xlsx_cell(title_of(report, lang))])
            sheet["A1"].font = Font(bold=True)
        sheet.append(table.headers)
        for cell in sheet[sheet.max_row]:
            cell.font = Font(bold=True)
        for row in table.rows:
            sheet.append([_xlsx_cell(c) for c in row])
        for cells in sheet.iter_rows():
            for cell in cells:
                if cell.data_type == "f":  # a name that looks like a formula stays text, never runs
                    cell.data_type = "s"
        for i, header in enumerate(table.headers):
            sheet.column_dimensions[chr(ord("A") + i)].width = max(12, min(40, 2 * len(header) + 4))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@lru_cache(maxsize=1)
def cjk_font() -> str:
    """Register the Chinese font with reportlab once; a clear error when it is not installed."""
    import os

    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    candidates = [os.environ["GRIDWATCH_REPORT_FONT"]] if os.environ.get("GRIDWATCH_REPORT_FONT") else list(CJK_FONTS)
    for path in candidates:
        if Path(path).is_file():
            pdfmetrics.registerFont(TTFont(FONT_NAME, path, subfontIndex=0))
            return FONT_NAME
    raise ConfigError(
        f"no font that renders Chinese for PDF reports: looked for {', '.join(candidates)}; install the Debian "
        "package fonts-wqy-microhei (scripts/setup does) or set GRIDWATCH_REPORT_FONT to a TrueType font file"
    )


def _bar_chart(values: Sequence[int], names: Sequence[str], font: str, width: float, height: float) -> object:
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.shapes import Drawing
    from reportlab.lib import colors

    drawing = Drawing(width, height)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 30, 30, width - 40, height - 40
    chart.data = [list(values) or [0]]
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labels.fontName = font
    chart.categoryAxis.categoryNames = list(names) or [""]
    chart.categoryAxis.labels.fontName = font
    chart.categoryAxis.labels.fontSize = 6
    chart.categoryAxis.labels.angle = 45 if len(names) > 8 else 0
    chart.categoryAxis.labels.boxAnchor = "ne" if len(names) > 8 else "n"
    chart.bars[0].fillColor = colors.HexColor("#c0392b")
    drawing.add(chart)
    return drawing


def _xml(text: str) -> str:
    """Text for a reportlab Paragraph, which reads markup: names are shown as written, never as tags."""
    from xml.sax.saxutils import escape

    return escape(text)


def _pdf_table(table: Table, font: str, width: float) -> list[object]:
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import Paragraph, TableStyle
    from reportlab.platypus import Table as PdfTable

    cell_style = ParagraphStyle("cell", fontName=font, fontSize=8, leading=10)
    rows: list[list[object]] = [
        [Paragraph(_xml(str(c)), cell_style) for c in table.headers],
        *[[Paragraph(_xml("" if c is None else str(c)), cell_style) for c in row] for row in table.rows],
    ]
    if len(rows) == 1:
        rows.append([Paragraph("—", cell_style), *([""] * (len(table.headers) - 1))])
    # splitInRow: a row taller than a page (a name thousands of characters long) continues on the next page
    t = PdfTable(rows, repeatRows=1, colWidths=[width / len(table.headers)] * len(table.headers), splitInRow=1)
    t.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, -1), font),
                ("FONTSIZE", (0, 0), (-1, -1), 8),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ]
        )
    )
    return [t]


def to_pdf(report: Report, lang: str) -> bytes:
    """A4 PDF: title, the sections as tables, and charts of alarms per day and by type."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    font = cjk_font()
    h1 = ParagraphStyle("h1", fontName=font, fontSize=15, leading=20, spaceAfter=6)
    h2 = ParagraphStyle("h2", fontName=font, fontSize=11, leading=15, spaceBefore=8, spaceAfter=4)
    body = ParagraphStyle("body", fontName=font, fontSize=8, leading=11)
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, title=title_of(report, lang))
    width = doc.width
    story: list[object] = [
        Paragraph(_xml(title_of(report, lang)), h1),
        Paragraph(f"{label('generated', lang)}: {report.generated_at.isoformat(timespec='seconds')}", body),
    ]
    days = report.period.days()
    by_type: dict[str, int] = {}
    for t, _sev, n in report.by_type_severity:
        by_type[alarm_name(t, lang)] = by_type.get(alarm_name(t, lang), 0) + n
    for table in tables(report, lang):
        story.append(Paragraph(_xml(table.title), h2))
        if table.key == "per_day":
            names = [d.strftime("%m-%d") if len(days) > 1 else d.isoformat() for d in days]
            story.append(_bar_chart([report.per_day.get(d, 0) for d in days], names, font, width, 150))
        elif table.key == "by_type" and by_type:
            story.append(_bar_chart(list(by_type.values()), list(by_type), font, width, 150))
            story.append(Spacer(1, 4))
        story += _pdf_table(table, font, width)
    doc.build(story)
    return out.getvalue()
