"""Delivery through apprise, one channel at a time so every attempt can be recorded."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import apprise

log = logging.getLogger(__name__)

_SECRET_RE = re.compile(r"(://)([^/@]+)@")


def mask_url(url: str) -> str:
    """An apprise URL with its credentials hidden, for logs and the attempt table."""
    masked = _SECRET_RE.sub(r"\1***@", url)
    scheme, _, rest = masked.partition("://")
    if scheme in ("json", "jsons", "form", "forms", "xml", "xmls", "mailto", "mailtos"):
        return masked.split("?")[0]
    # Token-in-path services (wecombot://KEY, dingtalk://TOKEN, ...): keep the scheme and a hint only.
    return f"{scheme}://{rest[:4]}***" if rest else masked


@dataclass(slots=True, frozen=True)
class ChannelResult:
    channel: str
    ok: bool
    detail: str


class Sender:
    """Sends a title and body to apprise URLs; a redirect URL (demo, staging) replaces them all."""

    def __init__(self, *, timeout_s: float = 5.0, redirect_url: str | None = None, parallel: int = 8) -> None:
        self.timeout_s = timeout_s
        self.redirect_url = redirect_url
        # Recipients are sent to in parallel so one slow channel does not hold up a critical alarm for others.
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="notify-send")

    @staticmethod
    def warm_up() -> None:
        """Let apprise load its plugins (a second or so, once per process) before the first alarm."""
        apprise.Apprise().add("json://127.0.0.1:9/")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def send_many(self, jobs: Sequence[tuple[list[str], str, str, str]]) -> list[list[ChannelResult]]:
        """Send (urls, title, body, recipient) jobs in parallel; results in the order of the jobs."""
        if len(jobs) <= 1:
            return [self.send(urls, title, body, recipient=who) for urls, title, body, who in jobs]
        futures = [self._pool.submit(self.send, urls, title, body, recipient=who) for urls, title, body, who in jobs]
        return [f.result() for f in futures]

    def send(self, urls: list[str], title: str, body: str, *, recipient: str = "") -> list[ChannelResult]:
        """Try every channel once; returns one result per channel."""
        if self.redirect_url:
            urls = [self.redirect_url]
            title = f"{title} → {recipient}" if recipient else title
        results = []
        for url in urls:
            ap = apprise.Apprise()
            asset_ok = ap.add(url)
            if not asset_ok:
                results.append(ChannelResult(mask_url(url), False, "apprise does not understand this URL"))
                continue
            for server in ap:
                if hasattr(server, "socket_read_timeout"):
                    server.socket_read_timeout = self.timeout_s
                    server.socket_connect_timeout = self.timeout_s
            try:
                ok = bool(ap.notify(title=title, body=body))
            except Exception as exc:  # noqa: BLE001 - apprise plugins raise freely; the attempt must still be recorded
                log.warning("apprise raised on %s: %s", mask_url(url), exc)
                results.append(ChannelResult(mask_url(url), False, f"{type(exc).__name__}: {exc}"[:300]))
                continue
            results.append(ChannelResult(mask_url(url), ok, "delivered" if ok else "apprise reported failure"))
        return results
