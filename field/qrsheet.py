"""A printable sheet of the resident report QR codes of buildings (`gridwatch field qr-codes`): one code per
building, and one per stairwell when asked, each with its address under it. A standalone HTML page (inline SVG
images), to print or hand to a print shop."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import quote

import segno

from field.repo import SiteRow
from field.report_service import link_code

PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>居民随手报二维码 / Resident report QR codes</title>
<style>
body {{ font-family: system-ui, "PingFang SC", "Noto Sans CJK SC", sans-serif; margin: 1cm; }}
.sheet {{ display: grid; grid-template-columns: repeat(3, 1fr); gap: .6cm; }}
figure {{ margin: 0; padding: .3cm; border: 1px dashed #888; text-align: center; break-inside: avoid; }}
figure img {{ width: 5cm; height: 5cm; image-rendering: pixelated; }}
small {{ word-break: break-all; color: #444; }}
</style></head><body>
<div class="sheet">
{codes}
</div></body></html>
"""
CODE = """<figure data-site="{site}"><img src="{img}" alt="QR {name}"><figcaption><strong>{name}</strong>{where}<br>
扫码报告安全隐患 / Scan to report a hazard<br><small>{url}</small></figcaption></figure>"""


def report_url(base_url: str, secret: str, site_id: str) -> str:
    """The public address a building's code holds."""
    return f"{base_url.rstrip('/')}/r/{quote(link_code(secret, site_id), safe='')}"


def qr_sheet(sites: Sequence[SiteRow], *, base_url: str, secret: str, stairwells: int = 0) -> str:
    """The sheet of codes for these sites (buildings only), with `stairwells` more per building."""
    codes = []
    for site in sites:
        if site.kind != "building":
            continue
        url = report_url(base_url, secret, site.id)
        for n in range(stairwells + 1):
            target = f"{url}?where={n}" if n else url
            codes.append(
                CODE.format(
                    site=escape(site.id),
                    img=segno.make_qr(target, error="m").svg_data_uri(scale=4),
                    name=escape(site.name or site.id),
                    where=f" · 单元 / stairwell {n}" if n else "",
                    url=escape(target),
                )
            )
    return PAGE.format(codes="\n".join(codes))
