"""Issue 9: failed logins (/login) and failed bearer tokens (API) limited per client address.

A sliding window per address: after `max_failures` failures within `window_s` the address is refused with
429 and Retry-After until its oldest counted failure leaves the window; successes do not reset the count
(a guesser holding one valid token must not be able to wash out its misses). While refused, even a valid
token is refused, so the answer says nothing about the token.

In memory, per process: with several API processes each keeps its own count (the limit is then at most
processes x max_failures per window), and a restart forgets. The client address is the socket's peer
(`request.client.host`); behind a reverse proxy run uvicorn with --proxy-headers and --forwarded-allow-ips
so that it is the real client, not the proxy (otherwise everyone shares the proxy's budget).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_FAILURES = 10
WINDOW_S = 300.0
MAX_ADDRESSES = 10_000  # memory bound: beyond this the address with the oldest last failure is forgotten


class FailureLimiter:
    """Failures per key in a sliding window; thread-safe (sync routes run in a thread pool)."""

    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        max_keys: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures, self.window_s, self.max_keys, self.clock = max_failures, window_s, max_keys, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> int | None:
        """Whole seconds until this key may try again, or None if it may now."""
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if times is None or len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[-self.max_failures] + self.window_s - now))

    def fail(self, key: str) -> None:
        """Count one failure for this key."""
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if times is None:
                if len(self._failures) >= self.max_keys:
                    oldest = min(self._failures, key=lambda k: self._failures[k][-1])
                    del self._failures[oldest]
                times = self._failures[key] = deque(maxlen=self.max_failures)
            times.append(now)
            if len(times) == self.max_failures:
                log.warning(
                    "client %s: %d failed logins within %.0f s; refused for a while",
                    key,
                    self.max_failures,
                    self.window_s,
                )


def client_key(host: str | None) -> str:
    """The limiter's key for a client address (the socket peer; see the module docstring about proxies): an IPv4
    address as it is, an IPv6 address by its /64 (one subscriber's network: its owner can take any address in it,
    so keying on the full address would give them 2^64 budgets), an IPv4-mapped IPv6 address as the IPv4 one."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
