"""Work orders (issue 21, docs/field.md) on the real database through the API: any site and any responsible
party, photos checked by their bytes and served only in scope, "fixed" then the re-inspection that alone closes an
order, the merchant's ledger fed as the score policy says, and the overdue ladder delivered for real."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from core import repo as core_repo
from core.settings import Settings
from field import report_service
from field import service as field_service
from field.photos import MAX_BYTES, PhotoError, inspect_photo
from field.repo import Scope
from field.schemas import ReinspectIn, WorkOrderCreate
from notify.delivery import Sender
from tests.api_helpers import ApiEnv, api_env
from tests.field_helpers import SECRET_PLACE, jpeg, jpeg_with_exif, png, png_with_text, webp_with_exif
from tests.support import Receiver, wait_for
from tests.test_pages import login

W1_MERCHANT_ORDER = {"site_id": "s1", "kind": "blocked_exit", "note": "boxes in the exit"}


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded, hierarchy=True) as e:
        yield e


def open_order(env: ApiEnv, who: str = "w1", **body: Any) -> dict[str, Any]:
    r = env.client.post("/api/v1/work-orders", headers=env.headers(who), json=body or W1_MERCHANT_ORDER)
    assert r.status_code == 201, r.text
    return dict(r.json())


def upload(env: ApiEnv, order_id: int, data: bytes, *, who: str = "w1", name: str = "p.jpg", ctype: str = "image/jpeg"):  # type: ignore[no-untyped-def]
    return env.client.post(
        f"/api/v1/work-orders/{order_id}/photos",
        headers=env.headers(who),
        files={"photo": (name, data, ctype)},
        data={"stage": "found"},
    )


def ledger_codes(env: ApiEnv) -> list[tuple[str, int]]:
    items = env.client.get("/api/v1/merchants/m1/ledger", headers=env.headers("m1")).json()["items"]
    return sorted((e["code"], e["points"]) for e in items)


def test_a_merchant_order_runs_from_finding_to_reinspection_and_feeds_the_ledger(env: ApiEnv) -> None:
    order = open_order(env)
    assert (order["party"], order["merchant_id"], order["severity"], order["status"]) == ("merchant", "m1", 1, "open")
    opened = datetime.fromisoformat(order["opened_at"])
    assert datetime.fromisoformat(order["due_at"]) - opened == timedelta(days=1), "critical: one day"
    assert order["finding_id"] is not None
    assert ledger_codes(env) == [("M-D10", -10)], "a verified hazard on the merchant's premises deducts"
    # the merchant sees it and reports it fixed; that alone does not close it
    mine = env.client.get("/api/v1/work-orders", headers=env.headers("m1")).json()["items"]
    assert [o["id"] for o in mine] == [order["id"]]
    r = env.client.post(f"/api/v1/work-orders/{order['id']}/fixed", headers=env.headers("m1"), json={"note": "moved"})
    assert r.status_code == 200 and r.json()["status"] == "fixed" and r.json()["fixed_by"] == "m1"
    # the score finding cannot be closed around the order's re-inspection
    r = env.client.post(f"/api/v1/findings/{order['finding_id']}/close", headers=env.headers("w1"), json={})
    assert r.status_code == 409 and "re-inspection" in r.json()["detail"]
    # a merchant cannot re-inspect its own fix
    r = env.client.post(
        f"/api/v1/work-orders/{order['id']}/reinspection", headers=env.headers("m1"), json={"passed": True}
    )
    assert r.status_code == 403
    r = env.client.post(
        f"/api/v1/work-orders/{order['id']}/reinspection",
        headers=env.headers("w1"),
        json={"passed": True, "note": "ok"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["closed_by"], r.json()["reinspections"]) == ("closed", "w1", 1)
    assert ledger_codes(env) == [("M-D10", -10), ("M-R02", 5)], "closed on time restores half"
    # closed is closed: no second re-inspection, no "fixed", no photo
    for path, body in (("reinspection", {"passed": True}), ("fixed", {})):
        r = env.client.post(f"/api/v1/work-orders/{order['id']}/{path}", headers=env.headers("w1"), json=body)
        assert r.status_code == 409, (path, r.text)
    assert upload(env, order["id"], jpeg()).status_code == 409
    detail = env.client.get(f"/api/v1/work-orders/{order['id']}", headers=env.headers("w1")).json()
    assert [e["kind"] for e in detail["events"]] == ["opened", "fixed", "reinspected"]
    assert env.client.get("/api/v1/work-orders", headers=env.headers("w1")).json()["items"] == []
    assert len(env.client.get("/api/v1/work-orders?open=false", headers=env.headers("w1")).json()["items"]) == 1


def test_any_site_and_party_and_a_failed_reinspection_sets_a_new_deadline(env: ApiEnv) -> None:
    # a residential building (no merchant): 409 for a finding before; a work order for the landlord now
    order = open_order(
        env,
        "w2",
        site_id="s2",
        kind="other",
        title="Cardboard piled in stairwell 2",
        party="landlord",
        party_name="Mr Chen",
        party_phone="+86 138 0000 0000",
        severity=2,
    )
    assert (order["party"], order["merchant_id"], order["finding_id"], order["kind"]) == (
        "landlord",
        None,
        None,
        "other",
    )
    r = env.client.post(
        "/api/v1/work-orders",
        headers=env.headers("w2"),
        json={"site_id": "s2", "kind": "valve_bypassed", "party": "merchant"},
    )
    assert r.status_code == 422 and "no merchant" in r.json()["detail"]
    assert open_order(env, "w2", site_id="s2", kind="flammables_in_stairwell")["party"] == "community"
    r = env.client.post(
        f"/api/v1/work-orders/{order['id']}/reinspection",
        headers=env.headers("w2"),
        json={"passed": False, "note": "still there"},
    )
    assert r.status_code == 200
    failed = r.json()
    assert failed["status"] == "open" and failed["reinspections"] == 1
    assert datetime.fromisoformat(failed["due_at"]) > datetime.fromisoformat(order["due_at"]) - timedelta(days=3)
    events = env.client.get(f"/api/v1/work-orders/{order['id']}", headers=env.headers("w2")).json()["events"]
    assert (
        events[-1]["kind"] == "reinspected"
        and events[-1]["passed"] is False
        and events[-1]["due_at"] == failed["due_at"]
    )
    # free text needs a title; an unknown check-list item is refused
    assert env.client.post("/api/v1/work-orders", headers=env.headers("w2"), json={"site_id": "s2"}).status_code == 422
    bad = {"site_id": "s2", "kind": "made_up_item"}
    assert env.client.post("/api/v1/work-orders", headers=env.headers("w2"), json=bad).status_code == 422


def test_photos_are_judged_by_their_bytes_and_served_only_in_scope(env: ApiEnv) -> None:
    order = open_order(env)
    r = upload(env, order["id"], jpeg(4032, 3024))
    assert r.status_code == 201, r.text
    photo = r.json()
    assert (photo["content_type"], photo["width"], photo["height"]) == ("image/jpeg", 4032, 3024)
    assert len(photo["id"]) == 32 and photo["url"] == f"/api/v1/work-orders/{order['id']}/photos/{photo['id']}"
    # a PNG sent as "image/jpeg" is stored as what it is
    as_png = upload(env, order["id"], png(), ctype="image/jpeg").json()
    assert as_png["content_type"] == "image/png"
    got = env.client.get(photo["url"], headers=env.headers("m1"))
    assert got.status_code == 200 and got.content == jpeg(4032, 3024)
    assert got.headers["content-type"] == "image/jpeg" and got.headers["x-content-type-options"] == "nosniff"
    assert "no-store" in got.headers["cache-control"]
    detail = env.client.get(f"/api/v1/work-orders/{order['id']}", headers=env.headers("w1")).json()
    assert [p["id"] for p in detail["photos"]] == [photo["id"], as_png["id"]]


@pytest.mark.parametrize(
    ("data", "name", "ctype", "status", "says"),
    [
        (b"<html><script>alert(1)</script></html>", "evil.jpg", "image/jpeg", 422, "not a JPEG"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "x.svg", "image/svg+xml", 422, "not a JPEG"),
        (jpeg()[:40], "cut.jpg", "image/jpeg", 422, "JPEG"),
        (b"\xff\xd8\xff" + b"\x00" * 100, "junk.jpg", "image/jpeg", 422, "JPEG"),
        (png()[:30], "cut.png", "image/png", 422, "PNG"),
        (b"", "empty.jpg", "image/jpeg", 422, "empty"),
        (b"GIF89a" + b"\x00" * 50, "a.gif", "image/gif", 422, "not a JPEG"),
    ],
)
def test_hostile_uploads_are_refused(env: ApiEnv, data: bytes, name: str, ctype: str, status: int, says: str) -> None:
    order = open_order(env)
    r = upload(env, order["id"], data, name=name, ctype=ctype)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert env.client.get(f"/api/v1/work-orders/{order['id']}", headers=env.headers("w1")).json()["photos"] == []


def test_oversized_and_malformed_requests(env: ApiEnv) -> None:
    order = open_order(env)
    url = f"/api/v1/work-orders/{order['id']}/photos"
    big = jpeg()[:-2] + b"\x00" * (MAX_BYTES + 20_000) + b"\xff\xd9"
    r = upload(env, order["id"], big)
    assert r.status_code == 413 and "5 MiB" in r.json()["detail"]
    # just under the envelope: the part itself is still measured
    r = upload(env, order["id"], jpeg()[:-2] + b"\x00" * (MAX_BYTES - 10) + b"\xff\xd9")
    assert r.status_code == 422 and "at most" in r.json()["detail"]
    r = env.client.post(url, headers={**env.headers("w1"), "Content-Type": "image/jpeg"}, content=jpeg())
    assert r.status_code == 415
    r = env.client.post(
        url, headers=env.headers("w1"), data={"stage": "found"}, files={"other": ("a", b"x", "text/plain")}
    )
    assert r.status_code == 422
    assert upload(env, order["id"], jpeg(), who="w1").status_code == 201
    r = env.client.post(
        url, headers=env.headers("w1"), files={"photo": ("p.jpg", jpeg(), "image/jpeg")}, data={"stage": "../x"}
    )
    assert r.status_code == 422


def test_other_scopes_see_nothing(env: ApiEnv) -> None:
    order = open_order(env)
    photo = upload(env, order["id"], jpeg()).json()
    other = open_order(env, "w9", site_id="s9", kind="illegal_wiring")
    other_photo = upload(env, other["id"], png(), who="w9").json()
    for who in ("w2", "m2", "w9", "m9", "c2admin", "lead2"):
        h = env.headers(who)
        assert env.client.get(f"/api/v1/work-orders/{order['id']}", headers=h).status_code == 404, who
        assert env.client.get(photo["url"], headers=h).status_code == 404, who
        assert env.client.post(f"/api/v1/work-orders/{order['id']}/fixed", headers=h, json={}).status_code in (403, 404)
        assert upload(env, order["id"], jpeg(), who=who).status_code == 404, who
        assert order["id"] not in [o["id"] for o in env.client.get("/api/v1/work-orders", headers=h).json()["items"]]
    # a photo id of another order, under an order the caller may see: still 404
    assert (
        env.client.get(
            f"/api/v1/work-orders/{order['id']}/photos/{other_photo['id']}", headers=env.headers("admin")
        ).status_code
        == 404
    )
    assert (
        env.client.get(f"/api/v1/work-orders/{order['id']}/photos/{'0' * 32}", headers=env.headers("w1")).status_code
        == 404
    )
    assert env.client.get(
        f"/api/v1/work-orders/{order['id']}/photos/..%2f..%2fetc", headers=env.headers("w1")
    ).status_code in (404, 422)
    # a worker cannot open an order on a site outside their micro-grids
    r = env.client.post("/api/v1/work-orders", headers=env.headers("w2"), json=W1_MERCHANT_ORDER)
    assert r.status_code == 404
    assert env.client.post("/api/v1/work-orders", headers=env.headers("m1"), json=W1_MERCHANT_ORDER).status_code == 403
    assert env.client.get("/api/v1/work-orders").status_code == 401
    for who in ("w1", "lead1", "duty1", "cadmin", "admin"):
        assert env.client.get(photo["url"], headers=env.headers(who)).status_code == 200, who


def test_overdue_orders_climb_the_ladder_and_reach_people(env: ApiEnv, receiver: Receiver) -> None:
    with env.conn() as conn, conn.transaction():
        core_repo.upsert_merchant(
            conn, id="m1", community_id="c1", name="Noodle shop", contact="", phone="", notify=[receiver.url("m1")]
        )
    order = open_order(env)
    due = datetime.fromisoformat(order["due_at"])
    sender = Sender(timeout_s=2, deadline_s=5)

    def send(urls: list[str], title: str, body: str, who: str) -> list[tuple[bool, str]]:
        return [(r.ok, r.detail) for r in sender.send(urls, title, body, recipient=who)]

    try:
        with env.conn() as conn, conn.transaction():
            assert field_service.escalate_overdue(conn, now=due - timedelta(minutes=1)) == 0
            assert field_service.escalate_overdue(conn, now=due + timedelta(days=1, minutes=1)) == 2
            assert field_service.escalate_overdue(conn, now=due + timedelta(days=1, minutes=2)) == 0, "idempotent"
        with env.conn() as conn, conn.transaction():
            field_service.deliver_notices(conn, send=send, now=due + timedelta(days=1, minutes=3))
        wait_for(lambda: receiver.for_path("w1") and len(receiver.for_path("m1")) == 2, timeout=10)
    finally:
        sender.close()
    assert "overdue" in receiver.for_path("w1")[0]["title"]
    titles = [m["title"] for m in receiver.for_path("m1")]
    assert any("Hazard to fix" in t for t in titles) and any("overdue" in t for t in titles), (
        "told when opened, then when overdue"
    )
    with env.conn() as conn:
        rows = conn.execute(
            "SELECT step, coalesce(worker_id, merchant_id), status FROM field_notice WHERE work_order_id = %s ORDER BY step, 2",
            (order["id"],),
        ).fetchall()
    assert rows == [(0, "m1", "sent"), (1, "m1", "sent"), (1, "w1", "sent"), (2, "lead1", "pending")], (
        "the leader's channel is unreachable here: retried later"
    )
    detail = env.client.get(f"/api/v1/work-orders/{order['id']}", headers=env.headers("w1")).json()
    assert detail["order"]["escalation"] == 2 and detail["order"]["overdue"] is False, "not yet by the wall clock"
    with env.conn() as conn:
        later = field_service.get_work_order(conn, order_id=order["id"], scope=Scope(), now=due + timedelta(days=1))
    assert later.order.overdue is True
    assert [e["kind"] for e in detail["events"]].count("escalated") == 2


def test_photo_checks_directly() -> None:
    assert inspect_photo(jpeg(1, 1)).content_type == "image/jpeg"
    with pytest.raises(PhotoError, match="pixels"):
        inspect_photo(png(1, 1)[:16] + (20000).to_bytes(4, "big") + png(1, 1)[20:])


def test_an_overdue_merchant_order_costs_what_the_policy_says(env: ApiEnv) -> None:
    """Overdue weeks are charged by the score tick on the order's finding (M-D12); a late re-inspection restores
    nothing; a failed re-inspection does not stop the clock of the original deadline."""
    from score import service as score_service

    order = open_order(env, site_id="s1", kind="illegal_wiring")  # P2: three days
    due = datetime.fromisoformat(order["due_at"])
    with env.conn() as conn, conn.transaction():
        failed = field_service.reinspect(
            conn,
            order_id=order["id"],
            body=ReinspectIn(passed=False, note="still on the sink"),
            actor="w1",
            scope=Scope(),
            now=due + timedelta(days=1),
        )
        assert failed.due_at == due + timedelta(days=3), "a P2's second chance: two days"
        score_service.run_score_tick(conn, now=due + timedelta(days=8))
    assert ledger_codes(env) == [("M-D12", -5), ("M-D12", -5), ("M-D16", -10)], "two started overdue weeks"
    with env.conn() as conn, conn.transaction():
        closed = field_service.reinspect(
            conn,
            order_id=order["id"],
            body=ReinspectIn(passed=True),
            actor="w1",
            scope=Scope(),
            now=due + timedelta(days=9),
        )
    assert closed.status == "closed"
    assert ledger_codes(env) == [("M-D12", -5), ("M-D12", -5), ("M-D16", -10)], "late: no restoration"
    assert env.client.get("/api/v1/merchants/m1/open", headers=env.headers("m1")).json()["findings"] == []


def test_the_list_pages_in_deadline_order(env: ApiEnv) -> None:
    made = [
        open_order(env, site_id="s1", kind=kind)["id"]
        for kind in ("missing_extinguisher", "blocked_exit", "illegal_wiring")
    ]
    first = env.client.get("/api/v1/work-orders?limit=2", headers=env.headers("w1")).json()
    rest = env.client.get(
        f"/api/v1/work-orders?limit=2&offset={first['next_offset']}", headers=env.headers("w1")
    ).json()
    ids = [o["id"] for o in first["items"] + rest["items"]]
    assert ids == [made[1], made[2], made[0]], "soonest deadline first: P1 1 d, P2 3 d, P3 7 d"
    assert rest["next_offset"] is None


def test_an_order_overdue_again_after_a_failed_reinspection_tells_people_again(env: ApiEnv, receiver: Receiver) -> None:
    # Review 21: the notices were unique per (order, step, recipient), and a failed re-inspection restarts the
    # ladder at step 0, so the second time the order fell overdue every notice hit ON CONFLICT DO NOTHING: the
    # ladder recorded "escalated" and told nobody.
    with env.conn() as conn, conn.transaction():
        core_repo.upsert_merchant(
            conn, id="m1", community_id="c1", name="Noodle shop", contact="", phone="", notify=[receiver.url("m1")]
        )
    order = open_order(env)
    first_due = datetime.fromisoformat(order["due_at"])
    with env.conn() as conn, conn.transaction():
        assert field_service.escalate_overdue(conn, now=first_due + timedelta(minutes=1)) == 1
        field_service.reinspect(
            conn,
            order_id=order["id"],
            body=ReinspectIn(passed=False, note="still blocked", due_at=first_due + timedelta(days=2)),
            actor="w1",
            scope=Scope(),
            now=first_due + timedelta(hours=1),
        )
        assert field_service.escalate_overdue(conn, now=first_due + timedelta(days=2, minutes=1)) == 1
    sender = Sender(timeout_s=2, deadline_s=5)

    def send(urls: list[str], title: str, body: str, who: str) -> list[tuple[bool, str]]:
        return [(r.ok, r.detail) for r in sender.send(urls, title, body, recipient=who)]

    try:
        with env.conn() as conn, conn.transaction():
            field_service.deliver_notices(conn, send=send, now=first_due + timedelta(days=2, minutes=2))
        wait_for(lambda: len(receiver.for_path("w1")) == 2 and len(receiver.for_path("m1")) == 4, timeout=10)
    finally:
        sender.close()
    detail = env.client.get(f"/api/v1/work-orders/{order['id']}", headers=env.headers("w1")).json()
    assert [e["kind"] for e in detail["events"]].count("escalated") == 2
    with env.conn() as conn:
        told = conn.execute(
            "SELECT details->'told' FROM work_order_event WHERE work_order_id = %s AND kind = 'escalated' ORDER BY id",
            (order["id"],),
        ).fetchall()
    assert [sorted(t[0]) for t in told] == [["m1", "w1"], ["m1", "w1"]], "the second overdue reaches people too"


def _camera_photos() -> list[tuple[str, bytes]]:
    """Photos as a real encoder writes them, with the GPS position, a description and the orientation."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° to show upright
    exif[0x010E] = SECRET_PLACE.decode()  # ImageDescription
    exif.get_ifd(0x8825)[2] = (30.0, 39.0, 31.0)  # GPSLatitude
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    made = []
    for fmt, options in (
        ("JPEG", {"exif": exif, "quality": 80}),
        ("JPEG", {"exif": exif, "progressive": True, "comment": SECRET_PLACE}),
        ("PNG", {"exif": exif, "pnginfo": _png_text()}),
        ("WEBP", {"exif": exif, "xmp": b"<x:xmpmeta>" + SECRET_PLACE + b"</x:xmpmeta>"}),
    ):
        out = io.BytesIO()
        image.save(out, fmt, **options)
        made.append((fmt, out.getvalue()))
    return made


def _png_text() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Location", SECRET_PLACE.decode())
    return info


def test_photos_are_served_without_their_location_and_still_show(env: ApiEnv) -> None:
    # Review 21: photos were kept byte for byte, with the EXIF GPS block, XMP, comments and text chunks.
    order = open_order(env)
    uploads = [*_camera_photos(), ("hand JPEG", jpeg_with_exif()), ("hand PNG", png_with_text())]
    uploads.append(("hand WebP", webp_with_exif()))
    for name, data in uploads:
        assert SECRET_PLACE in data or b"\x00\x02\x00\x05" in data, name
        r = upload(env, order["id"], data)
        assert r.status_code == 201, (name, r.text)
        got = env.client.get(r.json()["url"], headers=env.headers("m1")).content
        assert SECRET_PLACE not in got and b"xmpmeta" not in got, name
        with Image.open(io.BytesIO(got)) as shown:
            if not name.startswith("hand"):
                shown.load()
                assert shown.size == (64, 48), name
                assert 0x8825 not in shown.getexif(), f"{name}: no GPS block"
                if name == "JPEG":
                    assert shown.getexif().get(0x0112) == 6, "the orientation stays, so the photo shows upright"
                    assert shown.getpixel((32, 24))[0] > 150, "the picture itself is untouched"


FAR = "9999-12-31T23:59:59-14:00"  # a valid ISO instant whose UTC time is past year 9999 (PostgreSQL's limit)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/work-orders", {"site_id": "s1", "kind": "other", "title": "boxes\x00"}),
        ("post", "/api/v1/work-orders", {"site_id": "s1", "kind": "blocked_exit", "note": "a\x00b"}),
        ("post", "/api/v1/work-orders", {"site_id": "s1", "kind": "blocked_exit", "party_name": "Mr\x00"}),
        ("post", "/api/v1/work-orders", {"site_id": "s1\x00", "kind": "blocked_exit"}),
        ("post", "/api/v1/work-orders", {"site_id": "s1", "kind": "blocked_exit", "due_at": FAR}),
        ("post", "/api/v1/work-orders/{id}/fixed", {"note": "done\x00"}),
        ("post", "/api/v1/work-orders/{id}/reinspection", {"passed": False, "note": "\x00"}),
        ("post", "/api/v1/work-orders/{id}/reinspection", {"passed": False, "due_at": FAR}),
        ("get", "/api/v1/work-orders?site=s1%00", None),
        ("post", "/api/v1/patrol-rounds", {"micro_grid_id": "mg1", "title": "round\x00"}),
        ("post", "/api/v1/patrol-rounds", {"micro_grid_id": "mg1\x00"}),
        ("post", "/api/v1/patrol-rounds", {"micro_grid_id": "mg1", "due_end": FAR}),
        ("get", "/api/v1/patrol-rounds?since=9999-12-31T00:00:00-14:00", None),
        ("get", "/api/v1/patrol-coverage?micro_grid=mg1%00", None),
        ("post", "/api/v1/merchants/m1/trainings", {"attendees": 3, "names": "Li\x00"}),
        ("get", "/api/v1/merchants/m1%00/trainings", None),
    ],
)
def test_nul_characters_and_far_dates_never_answer_500(
    env: ApiEnv, method: str, path: str, body: dict[str, Any] | None
) -> None:
    # Review 21: a NUL character (PostgreSQL text cannot hold one) or an instant past year 9999 in UTC went
    # through validation to the database and answered 500. Free text is now kept without it; an id or a time is
    # refused.
    order = open_order(env)
    r = env.client.request(method, path.format(id=order["id"]), headers=env.headers("w1"), json=body)
    assert r.status_code in (200, 201, 404, 422), r.text
    assert "\\u0000" not in r.text


def test_free_text_loses_control_and_bidi_characters(env: ApiEnv) -> None:
    # What a worker types reaches the merchant's message and pages: no NUL, no right-to-left override that turns
    # "fix by ..." around, no terminal escapes.
    order = open_order(env, site_id="s1", kind="other", title="Boxes\u202e in\x1b[2J the exit", note="x\x00y")
    assert (order["title"], order["note"]) == ("Boxes in [2J the exit", "x y")
    r = env.client.post(
        "/api/v1/work-orders", headers=env.headers("w1"), json={"site_id": "s1", "kind": "other", "title": "\u202e\x00"}
    )
    assert r.status_code == 422, "nothing left of the title"


def test_the_reinspection_form_refuses_a_date_it_cannot_read(env: ApiEnv) -> None:
    client = TestClient(env.app, base_url="https://testserver")
    csrf = login(client, env.tokens["w1"])
    order = open_order(env)
    for due in ("garbage", "2026-99-01", FAR):
        r = client.post(f"/work-orders/{order['id']}/reinspection", data={"csrf": csrf, "passed": "0", "due_at": due})
        assert r.status_code == 422, (due, r.text[:200])
    r = client.post(f"/work-orders/{order['id']}/fixed", data={"csrf": csrf, "note": "done\x00"})
    assert r.status_code == 200 and 'data-status="fixed"' in r.text


def test_orders_at_the_top_of_the_ladder_do_not_starve_newer_overdue_ones(env: ApiEnv) -> None:
    # Review 21: the ladder took the oldest overdue orders first, up to a batch, including those that had climbed
    # every step already; once a batch of old orders sat at the top, a newly overdue one was never escalated.
    old = [open_order(env) for _ in range(3)]
    due = max(datetime.fromisoformat(o["due_at"]) for o in old)
    with env.conn() as conn, conn.transaction():
        assert field_service.escalate_overdue(conn, now=due + timedelta(days=4), limit=3) == 9
        late = field_service.open_work_order(
            conn,
            body=WorkOrderCreate(site_id="s1", kind="blocked_exit"),
            actor="w1",
            scope=Scope(),
            now=due + timedelta(days=3),
        )
        assert field_service.escalate_overdue(conn, now=due + timedelta(days=4, hours=1), limit=3) == 1
        assert field_service.get_work_order(conn, order_id=late.id, scope=Scope()).order.escalation == 1


def test_reports_at_the_top_of_the_ladder_do_not_starve_newer_ones(env: ApiEnv) -> None:
    now = datetime.now(UTC)
    with env.conn() as conn, conn.transaction():
        secret = env.app.state.settings.secret_key.get_secret_value()
        code = report_service.link_code(secret, "s2")
        for n in range(3):
            report_service.submit_report(conn, secret=secret, code=code, what="smoke", client=f"10.0.0.{n}", now=now)
        assert report_service.escalate_untaken(conn, now=now + timedelta(hours=3), limit=3) == 6
        report_service.submit_report(
            conn, secret=secret, code=code, what="smoke", client="10.0.0.9", now=now + timedelta(hours=2)
        )
        assert report_service.escalate_untaken(conn, now=now + timedelta(hours=3), limit=3) == 1


def test_a_merchant_cannot_file_photos_as_the_inspectors(env: ApiEnv) -> None:
    # Review 21: the page gives a merchant the 'fixed' stage, but the API and the form took any stage from it, so
    # the party that must fix a hazard could file its own photo as the re-inspection's (or the finding's) evidence.
    order = open_order(env)
    for stage in ("reinspection", "found"):
        r = env.client.post(
            f"/api/v1/work-orders/{order['id']}/photos",
            headers=env.headers("m1"),
            files={"photo": ("p.jpg", jpeg(), "image/jpeg")},
            data={"stage": stage},
        )
        assert r.status_code == 422 and "fixed" in r.json()["detail"], (stage, r.text)
    r = env.client.post(
        f"/api/v1/work-orders/{order['id']}/photos",
        headers=env.headers("m1"),
        files={"photo": ("p.jpg", jpeg(), "image/jpeg")},
        data={"stage": "fixed"},
    )
    assert r.status_code == 201 and r.json()["stage"] == "fixed"
    assert upload(env, order["id"], jpeg()).json()["stage"] == "found", "a worker files the finding's photos"


def test_a_failed_reinspection_tells_the_merchant_its_new_deadline(env: ApiEnv, receiver: Receiver) -> None:
    # Review 21: the merchant was told when the order was opened, but a failed re-inspection set a new, shorter
    # deadline without a word to the party that must meet it.
    with env.conn() as conn, conn.transaction():
        core_repo.upsert_merchant(
            conn, id="m1", community_id="c1", name="Noodle shop", contact="", phone="", notify=[receiver.url("m1")]
        )
    order = open_order(env)
    r = env.client.post(
        f"/api/v1/work-orders/{order['id']}/reinspection", headers=env.headers("w1"), json={"passed": False}
    )
    assert r.status_code == 200, r.text
    new_due = datetime.fromisoformat(r.json()["due_at"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    sender = Sender(timeout_s=2, deadline_s=5)
    try:
        with env.conn() as conn, conn.transaction():
            field_service.deliver_notices(
                conn,
                send=lambda urls, title, body, who: [
                    (x.ok, x.detail) for x in sender.send(urls, title, body, recipient=who)
                ],
                now=datetime.now(UTC),
            )
        wait_for(lambda: len(receiver.for_path("m1")) == 2, timeout=10)
    finally:
        sender.close()
    last = receiver.for_path("m1")[-1]
    assert "Re-inspection failed" in last["title"] and new_due in last["message"], last


def test_a_photo_is_served_only_under_its_own_order(env: ApiEnv) -> None:
    # Review 21: the check compared the orders' sites, so a photo answered under any order on the same site (the
    # docs promise 404 for a photo id of another order).
    first, second = open_order(env), open_order(env, site_id="s1", kind="illegal_wiring")
    photo = upload(env, first["id"], jpeg()).json()
    assert env.client.get(photo["url"], headers=env.headers("w1")).status_code == 200
    elsewhere = f"/api/v1/work-orders/{second['id']}/photos/{photo['id']}"
    assert env.client.get(elsewhere, headers=env.headers("w1")).status_code == 404


def test_a_ladder_step_with_nobody_to_tell_climbs_on_at_once(env: ApiEnv) -> None:
    """As an alarm's ladder does: a tier with nobody active (here no grid leader) must not hold the order for the
    days until the next step is due, and the step's event says the tier was empty."""
    order = open_order(env)
    due = datetime.fromisoformat(order["due_at"])
    with env.conn() as conn, conn.transaction():
        conn.execute("UPDATE worker SET active = false WHERE role = 'grid_leader'")
        assert field_service.escalate_overdue(conn, now=due + timedelta(days=1, minutes=1)) == 3
        steps = conn.execute(
            "SELECT details FROM work_order_event WHERE work_order_id = %s AND kind = 'escalated' ORDER BY id",
            (order["id"],),
        ).fetchall()
    details = [d for (d,) in steps]
    assert [d["step"] for d in details] == [1, 2, 3], "the community duty office is told the day the leader would be"
    assert details[1]["told"] == [] and details[1]["nobody_in_tier"] == "leader"
    assert "nobody_in_tier" not in details[0] and "nobody_in_tier" not in details[2]
