"""Issue 5 / RULES-REFERENCE 6.2: "tier D for any open major hazard regardless of score" — an open finding of a
hazard kind (recorded on site, not yet rectified) puts the merchant in review.open_hazard_tier (D)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import yaml

from core.errors import ConfigError
from core.settings import Settings
from score import engine as score
from score import service as score_service
from score.policy import load_policy, parse_policy
from tests.conftest import ROOT
from tests.support import load_registry
from tests.test_score_pipeline import REGISTRY

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
H = timedelta(hours=1)


@dataclass(frozen=True)
class F:
    kind: str
    found_at: datetime
    closed_at: datetime | None = None


@dataclass(frozen=True)
class Entry:
    id: int
    at: datetime
    points: int
    code: str = "M-D10"
    hazard: bool = False
    lock_until: datetime | None = None
    forced_tier: str | None = None
    forced_until: datetime | None = None
    corrects_id: int | None = None


@pytest.mark.parametrize(
    ("findings", "at", "points", "tier", "reason"),
    [
        ([], T0, -10, "A", None),  # 90: A, nothing open
        ([F("blocked_exit", T0)], T0, -10, "D", "1 open hazard not yet rectified"),  # 90 but an open hazard: D
        ([F("blocked_exit", T0), F("window_bars", T0)], T0 + H, -20, "D", "2 open hazards not yet rectified"),
        ([F("blocked_exit", T0, T0 + H)], T0 + 2 * H, -10, "A", None),  # rectified: back to the score's tier
        ([F("blocked_exit", T0, T0 + H)], T0 + H / 2, -10, "D", "1 open hazard"),  # judged at a moment it was open
        ([F("blocked_exit", T0 + H)], T0, 0, "A", None),  # not yet recorded at `at`
        ([F("retired_kind", T0)], T0, 0, "D", "1 open hazard"),  # a kind the policy forgot still counts
        ([F("blocked_exit", T0)], T0, -50, "D", "1 open hazard"),  # already D by score: reason shown
    ],
)
def test_open_hazard_forces_tier_d(findings: list[F], at: datetime, points: int, tier: str, reason: str | None) -> None:
    policy = load_policy().default
    assert policy.review.open_hazard_tier == "D"
    entries = [Entry(1, T0, points)] if points else []
    s = score.derive(policy, entries, at, findings)
    assert s.tier == tier
    if reason is None:
        assert not any("open hazard" in r for r in s.review_reasons)
    else:
        assert any(r.startswith(reason) for r in s.review_reasons) and s.review


def test_non_hazard_kind_and_disabled_policy_do_not_force() -> None:
    base = load_policy().default
    not_hazard = base.model_copy(
        update={
            "findings": tuple(
                f.model_copy(update={"hazard": False}) if f.kind == "blocked_exit" else f for f in base.findings
            )
        }
    )
    assert score.derive(not_hazard, [], T0, [F("blocked_exit", T0)]).tier == "A"
    off = base.model_copy(update={"review": base.review.model_copy(update={"open_hazard_tier": None})})
    assert score.derive(off, [], T0, [F("blocked_exit", T0)]).tier == "A"


def test_unknown_open_hazard_tier_is_refused() -> None:
    data = yaml.safe_load((ROOT / "score" / "policy.yaml").read_text(encoding="utf-8"))
    data["review"]["open_hazard_tier"] = "E"
    with pytest.raises(ConfigError, match=r"review\.open_hazard_tier: unknown tier 'E'"):
        parse_policy(data, "policy.yaml")


@pytest.fixture
def community(settings: Settings) -> Settings:
    return load_registry(settings, REGISTRY)


def test_finding_puts_merchant_in_d_until_rectified_through_the_service(community: Settings) -> None:
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        found = score_service.record_finding(conn, site_id="s1", kind="blocked_exit", actor="w1", now=T0)
    with psycopg.connect(community.dsn) as conn:
        s = score_service.get_score(conn, merchant_id="m1", now=T0)
        scores = score_service.list_community_scores(conn, community_id="c1", now=T0)
    assert (s.score, s.tier, s.review) == (90, "D", True)
    assert "1 open hazard not yet rectified" in s.review_reasons
    assert {m.merchant_id: m.tier for m in scores.merchants}["m1"] == "D"
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        report = score_service.recompute_all(conn, now=T0 + H, refresh=False)
    assert report.mismatches == [], "the stored D agrees with the ledger and findings at the snapshot's moment"
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        score_service.close_finding(conn, finding_id=found.id, actor="w1", note="exit cleared", now=T0 + 2 * H)
    with psycopg.connect(community.dsn) as conn:
        s = score_service.get_score(conn, merchant_id="m1", now=T0 + 2 * H)
    assert (s.score, s.tier, s.review) == (95, "A", False)
