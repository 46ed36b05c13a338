"""A field day played by its people against a running gridwatch API, over HTTP, as their phones would
(docs/field.md, "The field day"): an inspector walks a patrol round and fails one check-list item, which becomes a
work order; a resident scans a building's QR link, reports what they saw without an account, and follows the
receipt page to the outcome a worker gives; an admin dispatches a drill, which the worker acknowledges.

Only the API is used (no database, no import of field/ or api/), so the same story runs against the demo, a
docker-compose deployment or a test's stack. The admin's token finds the registry's sites and workers and, unless a
worker token is given, makes a one-day token for a micro-grid worker who covers the shop (revoked at the end).
"""

from __future__ import annotations

import html
import json
import re
import secrets
import struct
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

from core import roster
from core.errors import GridwatchError

Say = Callable[[str], None]
SHOP_KINDS = ("shop", "storage")
# The finding a round makes at the shop when the check-list has it: the commonest hazard of the storage area.
FAILED_ITEM = "ebike_charging_indoors"
OTHER_STOPS = 2  # sites of the micro-grid walked after the shop, every item passing
PAGE = 500  # the registry API's largest page


class FieldDayError(GridwatchError):
    """The field day cannot start (API unreachable, token refused, registry lacking a shop or building) or a step
    was refused; the message says what is missing."""


@dataclass
class Reply:
    status: int
    body: bytes
    headers: Message

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def detail(self) -> str:
        """The API's problem message, else the start of the body."""
        try:
            data = self.json()
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("detail"):
            return str(data["detail"])
        text = self.body.decode("utf-8", "replace")
        # A page's error (api/templates/error.html) rather than its markup.
        alert = re.search(r'<p class="error" role="alert">(.*?)</p>', text, re.DOTALL)
        return html.unescape(alert.group(1)).strip() if alert else text[:200].strip()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A phone follows redirects, but the simulator reads the receipt's address from the 303 itself.
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


class Phone:
    """One person's phone: HTTP to the API's base address, with their bearer token (a resident has none)."""

    def __init__(self, base: str, token: str | None = None, *, timeout_s: float = 15.0) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.opener = urllib.request.build_opener(_NoRedirect)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request; a refused connection or a timeout is a FieldDayError naming the address."""
        sent = dict(headers or {})
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            data = json.dumps(body).encode()
            content_type = "application/json"
        if content_type:
            sent["Content-Type"] = content_type
        req = urllib.request.Request(self.base + path, data=data, headers=sent, method=method)  # noqa: S310
        try:
            with self.opener.open(req, timeout=self.timeout_s) as resp:
                return Reply(resp.status, resp.read(), resp.headers)
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, exc.read(), exc.headers)
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise FieldDayError(f"cannot reach the gridwatch API at {self.base}: {reason}") from None

    def call(self, method: str, path: str, *, body: Any = None, expect: tuple[int, ...] = (200, 201)) -> Any:
        """A JSON API call that must succeed; its JSON answer."""
        reply = self.request(method, path, body=body)
        if reply.status not in expect:
            raise FieldDayError(f"{method} {path} answered {reply.status}: {reply.detail()}")
        return reply.json()

    def pages(self, path: str) -> list[dict[str, Any]]:
        """Every item of a paged registry list."""
        items: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page = self.call("GET", f"{path}?limit={PAGE}&offset={offset}")
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise FieldDayError(f"unexpected answer from the API to GET {path}: not a page of items")
            items += page["items"]
            offset = page.get("next_offset")
        return items


@dataclass
class Step:
    """One story of the day: what happened (a summary line), or why it failed."""

    name: str
    ok: bool
    line: str


@dataclass
class FieldDayResult:
    base: str
    steps: list[Step] = field(default_factory=list)
    work_order_id: int | None = None
    round_id: int | None = None
    report_id: int | None = None
    drill_id: int | None = None

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)


@dataclass
class Cast:
    """Who plays the day and where: the shop the round fails at, the building whose QR code the resident scans,
    the inspector's phone (a worker's token, else the admin's) and the worker's id."""

    shop: dict[str, Any]
    others: list[dict[str, Any]]
    building: dict[str, Any]
    inspector: Phone
    worker_id: str | None
    covers: dict[str, list[str]] = field(default_factory=dict)  # micro-grid -> its micro-grid workers
    made_tokens: list[int] = field(default_factory=list)


def tiny_png() -> bytes:
    """A 2x2 photo, as a phone would attach (a real PNG: the API checks images by their bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x80\x60\x40" * 2 for _ in range(2))
    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def multipart(fields: dict[str, str], files: dict[str, tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body as a browser sends the resident form; (body, content type)."""
    boundary = "----gridwatch" + secrets.token_hex(12)
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, ctype, data) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class FieldDay:
    """The day's three stories against one API; run() plays them and returns what each did."""

    def __init__(
        self,
        api: str,
        admin_token: str,
        *,
        worker_token: str | None = None,
        say: Say | None = None,
        wait_s: float = 0.0,
        timeout_s: float = 15.0,
    ) -> None:
        if not urlsplit(api).scheme.startswith("http") or not urlsplit(api).netloc:
            raise FieldDayError(f"--api {api!r}: give the API's address, e.g. http://127.0.0.1:8000")
        self.base = api.rstrip("/")
        self.admin = Phone(self.base, admin_token, timeout_s=timeout_s)
        self.worker_token = worker_token
        self.say: Say = say or (lambda _line: None)
        self.wait_s = wait_s
        self.timeout_s = timeout_s
        # Marks what this day wrote (its round, report and drill), also when two days run in the same second.
        self.tag = f"{datetime.now().astimezone():%H:%M:%S} #{secrets.token_hex(2)}"

    # -- setting up ------------------------------------------------------------------------------------------

    def _whoami(self, phone: Phone, what: str) -> dict[str, Any]:
        """The token's principal, waiting up to wait_s for an API that is still starting."""
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                reply = phone.request("GET", "/api/v1/me")
                break
            except FieldDayError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        if reply.status in (401, 403):
            raise FieldDayError(f"the API at {self.base} refused the {what} ({reply.status}: {reply.detail()})")
        if reply.status != 200:
            raise FieldDayError(f"GET /api/v1/me at {self.base} answered {reply.status}: {reply.detail()}")
        try:
            me = reply.json()
        except ValueError:
            me = None
        if not isinstance(me, dict) or "role" not in me:
            raise FieldDayError(f"{self.base} does not answer as a gridwatch API (GET /api/v1/me gave no principal)")
        return me

    def cast(self) -> Cast:
        """Check the tokens and pick the shop, the building and the worker from the registry."""
        me = self._whoami(self.admin, "admin token")
        if me.get("role") != "admin":
            raise FieldDayError(
                f"--token is a {me.get('role')} token: the field day needs an admin token "
                "(gridwatch token create --role admin)"
            )
        sites = [s for s in self.admin.pages("/api/v1/admin/sites") if s.get("active", True)]
        workers = [
            w
            for w in self.admin.pages("/api/v1/admin/workers")
            if w.get("active", True) and w.get("role") == "micro_grid_worker"
        ]
        shops = [s for s in sites if s["kind"] in SHOP_KINDS]
        buildings = [s for s in sites if s["kind"] == "building"]
        missing = [
            what
            for what, found in (
                ("shop or storage site (for the patrol round)", shops),
                ("building (for the resident's QR code)", buildings),
            )
            if not found
        ]
        if missing:
            raise FieldDayError(
                f"the registry at {self.base} has no {' and no '.join(missing)}: "
                "load a community with one (gridwatch load examples/storage-area.yaml)"
            )
        covers: dict[str, list[str]] = {}
        for w in workers:
            for mg in w.get("micro_grids", []):
                covers.setdefault(mg, []).append(w["id"])
        reach = self._reachability(workers)
        for ids in covers.values():
            ids.sort(key=lambda w: reach[w])
        inspector, worker_id = self.admin, None
        if self.worker_token:
            inspector = Phone(self.base, self.worker_token, timeout_s=self.timeout_s)
            mine = self._whoami(inspector, "worker token")
            if mine.get("role") != "worker":
                raise FieldDayError(f"--worker-token is a {mine.get('role')} token, not a worker's")
            worker_id = mine["worker_id"]
            shops = [s for s in shops if worker_id in covers.get(s["micro_grid_id"], [])]
            if not shops:
                raise FieldDayError(f"worker {worker_id} covers no micro-grid with a shop or storage site")
        mg_with_building = {b["micro_grid_id"] for b in buildings}
        # A micro-grid whose own worker hears a drill now (on duty, else on call) and that has a building too.
        shop = min(
            shops,
            key=lambda s: (
                min((reach[w] for w in covers.get(s["micro_grid_id"], [])), default=3),
                s["micro_grid_id"] not in mg_with_building,
            ),
        )
        mg = shop["micro_grid_id"]
        building = min(buildings, key=lambda b: b["micro_grid_id"] != mg)
        others = sorted(
            (s for s in sites if s["micro_grid_id"] == mg and s["id"] != shop["id"]),
            key=lambda s: (s["id"] != building["id"], s["kind"] != "building"),
        )[:OTHER_STOPS]
        cast = Cast(
            shop=shop, others=others, building=building, inspector=inspector, worker_id=worker_id, covers=covers
        )
        if worker_id is None and covers.get(mg):
            worker_id = covers[mg][0]
            cast.inspector = self._phone_of(cast, worker_id, f"covers {mg}")
            cast.worker_id = worker_id
        elif worker_id is None:
            self.say(f"no micro-grid worker covers {mg}: the admin walks the round")
        return cast

    def _reachability(self, workers: list[dict[str, Any]]) -> dict[str, int]:
        """Per worker: 0 on duty now by their roster (in their community's time zone), 1 on call, 2 neither — the
        order in which alarm routing (core.routing) reaches a micro-grid's own workers."""
        zones = {c["id"]: c.get("timezone") or "Asia/Shanghai" for c in self.admin.pages("/api/v1/admin/communities")}
        now = datetime.now(UTC)
        reach: dict[str, int] = {}
        for w in workers:
            try:
                duty = roster.on_duty(w.get("roster"), now, zones.get(w.get("community_id", ""), "Asia/Shanghai"))
            except (ValueError, KeyError):
                duty = False
            reach[w["id"]] = 0 if duty else 1 if w.get("on_call") else 2
        return reach

    def _phone_of(self, cast: Cast, worker_id: str, why: str) -> Phone:
        """A worker's phone through a one-day token the admin makes for them (revoked when the day ends)."""
        made = self.admin.call(
            "POST",
            "/api/v1/admin/tokens",
            body={"role": "worker", "worker_id": worker_id, "label": "field-day simulator", "days": 1},
        )
        cast.made_tokens.append(made["id"])
        self.say(f"worker {worker_id} {why}: a one-day token {made['id']} for their phone")
        return Phone(self.base, made["token"], timeout_s=self.timeout_s)

    # -- the stories -----------------------------------------------------------------------------------------

    def patrol(self, cast: Cast, result: FieldDayResult) -> Step:
        """The round over the shop (and a few neighbours): one failed item, which must come back as a work order."""
        shop = cast.shop
        who = cast.worker_id or "the admin"
        detail = cast.inspector.call(
            "POST",
            "/api/v1/patrol-rounds",
            body={
                "site_ids": [shop["id"]] + [s["id"] for s in cast.others],
                "title": f"巡查 / Field-day patrol {self.tag}",
            },
        )
        round_id = detail["round"]["id"]
        result.round_id = round_id
        self.say(f"{who} walks patrol round {round_id}: {len(detail['stops'])} stop(s) in {shop['micro_grid_id']}")
        orders: list[dict[str, Any]] = []
        failed = ""
        for stop in detail["stops"]:
            items = [i["code"] for i in detail["checklists"][stop["checklist"]]["items"]]
            answers = dict.fromkeys(items, "pass")
            note = ""
            if stop["site_id"] == shop["id"]:
                failed = FAILED_ITEM if FAILED_ITEM in items else items[0]
                answers[failed] = "fail"
                note = "巡查发现 / found on the field-day round"
            done = cast.inspector.call(
                "POST",
                f"/api/v1/patrol-rounds/{round_id}/stops/{stop['id']}/check-in",
                body={"answers": answers, "note": note},
            )
            fails = [c for c, a in answers.items() if a == "fail"]
            self.say(
                f"  stop {stop['seq']} {stop['site_name'] or stop['site_id']} ({stop['checklist']}): "
                f"{len(items) - len(fails)} passed" + (f", failed {', '.join(fails)}" if fails else "")
            )
            orders += done["work_orders"]
        order = next((o for o in orders if o["kind"] == failed and o["site_id"] == shop["id"]), None)
        if order is None:
            return Step("patrol", False, f"patrol round {round_id}: the failed item {failed} made no work order")
        # What the inspector's phone shows next: the order itself, from the API.
        got = cast.inspector.call("GET", f"/api/v1/work-orders/{order['id']}")["order"]
        stops = {s["id"] for s in detail["stops"]}
        if got["source"] != "patrol" or got["patrol_stop_id"] not in stops:
            return Step("patrol", False, f"work order {order['id']} is not linked to round {round_id}'s stop")
        result.work_order_id = got["id"]
        url = f"{self.base}/work-orders/{got['id']}"
        due = datetime.fromisoformat(got["due_at"]).astimezone(UTC)
        self.say(f"  work order {got['id']} opened: {url}")
        return Step(
            "patrol",
            True,
            f"patrol round {round_id} at {shop['name'] or shop['id']}: a failed check-list item became work order "
            f"{got['id']} ({got['kind']}, P{got['severity']}, due {due:%Y-%m-%d %H:%M} UTC): {url}",
        )

    def resident(self, cast: Cast, result: FieldDayResult) -> Step:
        """Scan, report without an account, read the receipt; a worker takes and closes it; the receipt shows the
        outcome."""
        building = cast.building
        links = self.admin.call("GET", "/api/v1/resident-links")
        link = next((li for li in links if li["site_id"] == building["id"]), None)
        if link is None:
            return Step("resident", False, f"GET /api/v1/resident-links gives no link for {building['id']}")
        target = urlsplit(link["url"])
        path = target.path + (f"?{target.query}" if target.query else "")
        phone = Phone(self.base, timeout_s=self.timeout_s)
        form = phone.request("GET", path)
        if form.status != 200 or b"resident-form" not in form.body:
            return Step("resident", False, f"the QR link {link['url']} answered {form.status}: {form.detail()}")
        self.say(f"a resident scans {building['name'] or building['id']}'s QR code ({link['url']})")
        what = f"楼道堆放纸箱 / cardboard piled in the stairwell ({self.tag})"
        body, ctype = multipart(
            {"what": what, "place": "2单元3楼 / unit 2, 3rd floor", "phone": ""},
            {"photo": ("stairwell.png", "image/png", tiny_png())},
        )
        origin = f"{urlsplit(self.base).scheme}://{urlsplit(self.base).netloc}"
        sent = phone.request("POST", path, data=body, content_type=ctype, headers={"Origin": origin})
        receipt_path = sent.headers.get("Location", "") if sent.status == 303 else ""
        if not receipt_path.startswith("/r/receipt/"):
            if sent.status == 429:
                return Step(
                    "resident",
                    False,
                    f"the resident limits refused the report (429: {sent.detail()}); a sender may send 3 in 10 "
                    f"minutes, a building take 30 an hour: retry after {sent.headers.get('Retry-After')} s",
                )
            return Step("resident", False, f"the report was refused: {sent.status} {sent.detail()}")
        receipt_url = self.base + receipt_path
        status = self._receipt_status(phone, receipt_path)
        self.say(f"  sent; the receipt page says {status}: {receipt_url}")
        handler = cast.inspector if building["micro_grid_id"] == cast.shop["micro_grid_id"] else self.admin
        reports = handler.call("GET", "/api/v1/resident-reports")
        report = next((r for r in reports if r["site_id"] == building["id"] and r["what"] == what), None)
        if report is None:
            return Step("resident", False, f"the report on {building['id']} is not in the staff's list")
        result.report_id = report["id"]
        outcome = "纸箱已清走 / the boxes are cleared"
        handler.call("POST", f"/api/v1/resident-reports/{report['id']}/take")
        handler.call("POST", f"/api/v1/resident-reports/{report['id']}/close", body={"outcome": outcome})
        by = "the admin" if handler is self.admin else cast.worker_id
        self.say(f"  resident report {report['id']} taken and closed by {by}")
        status = self._receipt_status(phone, receipt_path)
        page = phone.request("GET", receipt_path)
        if status != "closed" or html.escape(outcome).encode() not in page.body:
            return Step("resident", False, f"the receipt {receipt_url} shows {status}, not the outcome")
        self.say(f"  the resident reloads the receipt: {status}, “{outcome}”")
        return Step(
            "resident",
            True,
            f"resident report {report['id']} from {building['name'] or building['id']}'s QR code ({link['url']}); "
            f"the resident follows it at {receipt_url}: {status}, “{outcome}”",
        )

    @staticmethod
    def _receipt_status(phone: Phone, path: str) -> str:
        page = phone.request("GET", path)
        found = re.search(rb'data-status="([a-z_]+)"', page.body) if page.status == 200 else None
        return found.group(1).decode() if found else f"HTTP {page.status}"

    def drill(self, cast: Cast, result: FieldDayResult) -> Step:
        """The admin dispatches a drill to the shop's micro-grid; the worker acknowledges it and arrives."""
        mg = cast.shop["micro_grid_id"]
        drill = self.admin.call(
            "POST",
            "/api/v1/admin/drills",
            body={"micro_grid_id": mg, "scenario": f"模拟燃气泄漏 / simulated gas leak ({self.tag})"},
        )
        result.drill_id = drill["id"]
        url = f"{self.base}/drills/{drill['id']}"
        names = [r["worker_id"] for r in drill["responders"]]
        self.say(f"the admin dispatches drill {drill['id']} to {mg}: {', '.join(names) or 'nobody'}")
        # The inspector answers when the drill reached them; else (routed by roster to whoever is on duty) the
        # first of the micro-grid's own workers it reached, through a phone made for them — unless the worker's
        # token was given. An on-call worker of another micro-grid is told but cannot answer (docs/field.md).
        own = [n for n in names if n in cast.covers.get(mg, [])]
        responder, phone = None, None
        if cast.worker_id in own and cast.inspector is not self.admin:
            responder, phone = cast.worker_id, cast.inspector
        elif own and self.worker_token is None:
            responder = own[0]
            phone = self._phone_of(cast, responder, f"was sent drill {drill['id']}")
        answered = ""
        if responder is not None and phone is not None:
            for step in ("ack", "arrived"):
                phone.call("POST", f"/api/v1/drills/{drill['id']}/{step}")
            report = self.admin.call("GET", f"/api/v1/drills/{drill['id']}")
            mine = next(r for r in report["responders"] if r["worker_id"] == responder)
            if mine["ack_s"] is None or mine["arrival_s"] is None:
                return Step("drill", False, f"drill {drill['id']}: the report has no response time for {responder}")
            times = f"acknowledged in {mine['ack_s']:.1f} s, on site in {mine['arrival_s']:.1f} s"
            answered = f"; {responder} {times}"
            self.say(f"  {responder} {times}")
        elif names and not own:
            self.say(
                f"  drill {drill['id']} reached only on-call workers of other micro-grids ({', '.join(names)}), "
                "who cannot answer it: it stays unanswered"
            )
        else:
            self.say(f"  nobody the simulator plays was sent drill {drill['id']}: it stays unanswered")
        return Step(
            "drill",
            True,
            f"drill {drill['id']} (网格赶考) dispatched to micro-grid {mg}, {len(names)} worker(s): {url}{answered}",
        )

    # -- the day ---------------------------------------------------------------------------------------------

    def run(self) -> FieldDayResult:
        """Cast the day, play the three stories (each on its own: one failing does not stop the others), and
        revoke the worker token made for it."""
        try:
            cast = self.cast()
        except (KeyError, TypeError, ValueError) as exc:
            # The registry's answers of another shape than this simulator knows, as in the stories below.
            raise FieldDayError(
                f"unexpected answer from the API while casting the day ({exc.__class__.__name__}: {exc})"
            ) from None
        result = FieldDayResult(self.base)
        try:
            for name, story in (("patrol", self.patrol), ("resident", self.resident), ("drill", self.drill)):
                try:
                    step = story(cast, result)
                except FieldDayError as exc:
                    step = Step(name, False, f"{name}: {exc}")
                except (KeyError, TypeError, ValueError) as exc:
                    # An answer of another shape than this simulator knows (another gridwatch version, a proxy).
                    step = Step(
                        name, False, f"{name}: unexpected answer from the API ({exc.__class__.__name__}: {exc})"
                    )
                if not step.ok:
                    self.say(f"FAILED {step.line}")
                result.steps.append(step)
        finally:
            self._revoke(cast, result)
        return result

    def _revoke(self, cast: Cast, result: FieldDayResult) -> None:
        """Revoke every token made for the day. One that could not be (the admin token refused by now, the API gone)
        fails the day with a step naming it, so nobody is left unaware of a live worker token."""
        for token_id in cast.made_tokens:
            path = f"/api/v1/admin/tokens/{token_id}"
            try:
                reply = self.admin.request("DELETE", path)
                refused = None if reply.status in (200, 409) else f"{reply.status}: {reply.detail()}"  # 409: revoked
            except FieldDayError as exc:
                refused = str(exc)
            if refused is not None:
                step = Step(
                    "tokens",
                    False,
                    f"worker token {token_id} made for the day is still live ({refused}): revoke it "
                    f"with an admin token (DELETE {path}); it expires in a day",
                )
                self.say(f"FAILED {step.line}")
                result.steps.append(step)
