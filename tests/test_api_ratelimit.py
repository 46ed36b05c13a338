"""Issue 9: failed logins (/login) and failed bearer tokens limited per client address: 10 failures in 5 min
-> 429 with Retry-After, even for a valid token, until the oldest failure leaves the window."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.ratelimit import MAX_FAILURES, WINDOW_S, FailureLimiter, client_key
from core.settings import Settings
from tests.api_helpers import ApiEnv, api_env


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# (failure times, check time, expected retry_after) with max 3 failures per 60 s
@pytest.mark.parametrize(
    ("failures", "at", "want"),
    [
        ([], 0.0, None),
        ([0.0, 1.0], 2.0, None),  # under the limit
        ([0.0, 1.0, 2.0], 2.0, 58),  # third failure: wait until the first leaves the window
        ([0.0, 1.0, 2.0], 59.5, 1),  # rounds up, at least 1 s
        ([0.0, 1.0, 2.0], 60.0, None),  # the first failure left the window
        ([0.0, 30.0, 40.0, 50.0], 55.0, 35),  # sliding: the 3 most recent count (30 + 60 - 55)
        ([0.0, 10.0, 100.0], 101.0, None),  # old failures expire
    ],
)
def test_sliding_window(failures: list[float], at: float, want: int | None) -> None:
    clock = Clock()
    limiter = FailureLimiter(max_failures=3, window_s=60.0, clock=clock)
    for t in failures:
        clock.now = t
        limiter.fail("1.2.3.4")
    clock.now = at
    assert limiter.retry_after("1.2.3.4") == want
    assert limiter.retry_after("5.6.7.8") is None, "another address is not affected"


def test_memory_is_bounded() -> None:
    clock = Clock()
    limiter = FailureLimiter(max_failures=2, window_s=60.0, max_keys=3, clock=clock)
    for i in range(10):
        clock.now += 1
        limiter.fail(f"10.0.0.{i}")
        limiter.fail(f"10.0.0.{i}")
    assert len(limiter._failures) == 3
    assert limiter.retry_after("10.0.0.9") is not None and limiter.retry_after("10.0.0.0") is None


@pytest.fixture
def env(loaded: Settings) -> Iterator[tuple[ApiEnv, Clock]]:
    clock = Clock()
    with api_env(loaded) as e:
        e.app.state.auth_limiter = FailureLimiter(clock=clock)
        yield e, clock


def test_bad_bearer_tokens_are_limited_per_address(env: tuple[ApiEnv, Clock]) -> None:
    e, clock = env
    bad = {"Authorization": "Bearer gw_guess"}
    for _ in range(MAX_FAILURES):
        assert e.client.get("/api/v1/me", headers=bad).status_code == 401
    r = e.client.get("/api/v1/me", headers=bad)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) == int(WINDOW_S)
    assert "try again in" in r.json()["detail"]
    # while refused a valid token is refused too (the answer says nothing about the token)
    assert e.client.get("/api/v1/me", headers=e.headers("w1")).status_code == 429
    # another address is not affected
    other = TestClient(e.app, client=("198.51.100.7", 50000))
    assert other.get("/api/v1/me", headers=e.headers("w1")).status_code == 200
    clock.now += 100
    assert int(e.client.get("/api/v1/me", headers=bad).headers["Retry-After"]) == int(WINDOW_S) - 100
    clock.now += WINDOW_S - 100
    assert e.client.get("/api/v1/me", headers=e.headers("w1")).status_code == 200


def test_valid_requests_and_cookies_are_not_counted(env: tuple[ApiEnv, Clock]) -> None:
    e, _ = env
    for _ in range(3 * MAX_FAILURES):
        assert e.client.get("/api/v1/me", headers=e.headers("admin")).status_code == 200
        assert e.client.get("/api/v1/me").status_code == 401  # no credentials: nothing guessed
    assert e.client.get("/api/v1/me", headers=e.headers("admin")).status_code == 200


def login_form(client: TestClient) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert m
    return m.group(1)


def test_failed_logins_are_limited(env: tuple[ApiEnv, Clock]) -> None:
    e, clock = env
    c = e.client
    for _ in range(MAX_FAILURES):
        r = c.post("/login", data={"token": "gw_guess", "csrf": login_form(c)}, follow_redirects=False)
        assert r.status_code == 401
    r = c.post("/login", data={"token": e.tokens["w1"], "csrf": login_form(c)}, follow_redirects=False)
    assert r.status_code == 429 and r.headers["Retry-After"] == str(int(WINDOW_S))
    assert "too many failed logins" in r.text and "gw_session" not in r.headers.get("set-cookie", "")
    # bearer failures and login failures share the address's budget
    assert c.get("/api/v1/me", headers=e.headers("w1")).status_code == 429
    clock.now += WINDOW_S
    r = c.post("/login", data={"token": e.tokens["w1"], "csrf": login_form(c)}, follow_redirects=False)
    assert r.status_code == 303 and "gw_session=" in r.headers["set-cookie"]


def test_an_ipv6_client_is_one_client_across_its_64() -> None:
    """Its owner can take any address of a /64: keyed by the full address, each would have a budget of its own."""
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff:ffff:ffff:fffe") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:198.51.100.7") == client_key("198.51.100.7") == "198.51.100.7"
    assert client_key("198.51.100.8") != client_key("198.51.100.7")
    assert client_key(None) == "unknown" and client_key("testclient") == "testclient"


def test_bad_tokens_from_addresses_of_one_ipv6_network_share_a_budget(env: tuple[ApiEnv, Clock]) -> None:
    e, _ = env
    bad = {"Authorization": "Bearer gw_guess"}
    for n in range(MAX_FAILURES):
        hopper = TestClient(e.app, client=(f"2001:db8:0:7::{n + 1:x}", 50000))
        assert hopper.get("/api/v1/me", headers=bad).status_code == 401
    assert TestClient(e.app, client=("2001:db8:0:7::beef", 50000)).get("/api/v1/me", headers=bad).status_code == 429
    assert TestClient(e.app, client=("2001:db8:0:8::1", 50000)).get("/api/v1/me", headers=bad).status_code == 401
