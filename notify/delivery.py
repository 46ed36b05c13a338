"""Delivery through apprise, one channel at a time so every attempt can be recorded.

Every channel's send has a whole-request deadline (GRIDWATCH_NOTIFY_DEADLINE_S). apprise's own timeouts are per
socket operation (connect, each read), so an endpoint that trickles its answer a byte at a time never trips them
and would hold a sending thread for as long as it likes. The send runs in a thread of its own; past the deadline
the attempt is recorded as failed and retried like any other, and the thread is left to finish (or time out)
on its own. Such threads are counted, and beyond MAX_ABANDONED at once no new send is started, so hanging
endpoints cannot make the process grow without bound.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import apprise

log = logging.getLogger(__name__)

_SECRET_RE = re.compile(r"(://)([^/@]+)@")
MAX_ABANDONED = 64


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

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        deadline_s: float = 15.0,
        redirect_url: str | None = None,
        parallel: int = 8,
    ) -> None:
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.redirect_url = redirect_url
        self._abandoned = 0
        self._abandoned_lock = threading.Lock()
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
            results.append(self._notify_within_deadline(ap, url, title, body))
        return results

    def _notify_within_deadline(self, ap: apprise.Apprise, url: str, title: str, body: str) -> ChannelResult:
        """One channel's send, given up (as a failed attempt) when it has not finished within deadline_s."""
        with self._abandoned_lock:
            if self._abandoned >= MAX_ABANDONED:
                return ChannelResult(
                    mask_url(url), False, f"not sent: {self._abandoned} earlier sends still hang past their deadline"
                )
        outcome: list[ChannelResult] = []

        def run() -> None:
            try:
                # Every message is plain text, and some carry what a stranger typed (a resident's report): said so,
                # apprise escapes it for HTML channels (e-mail) instead of passing markup through as it is.
                ok = bool(ap.notify(title=title, body=body, body_format=apprise.NotifyFormat.TEXT))
            except Exception as exc:  # noqa: BLE001 - apprise plugins raise freely; the attempt must still be recorded
                log.warning("apprise raised on %s: %s", mask_url(url), exc)
                outcome.append(ChannelResult(mask_url(url), False, f"{type(exc).__name__}: {exc}"[:300]))
            else:
                outcome.append(ChannelResult(mask_url(url), ok, "delivered" if ok else "apprise reported failure"))
            finally:
                with self._abandoned_lock:
                    if abandoned.is_set():
                        self._abandoned -= 1

        abandoned = threading.Event()
        thread = threading.Thread(target=run, name="notify-channel", daemon=True)
        thread.start()
        thread.join(self.deadline_s)
        with self._abandoned_lock:
            if outcome:
                return outcome[0]
            abandoned.set()
            self._abandoned += 1
        log.warning("%s did not answer within %.0f s: giving up on this attempt", mask_url(url), self.deadline_s)
        return ChannelResult(mask_url(url), False, f"no complete answer within the {self.deadline_s:g} s deadline")
