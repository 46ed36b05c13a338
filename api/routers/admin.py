"""Admin: tokens, registry CRUD and bulk import, silences, rules and policy in force, KPIs.

No `from __future__ import annotations` here: the CRUD endpoints are built in a loop and FastAPI must see
their body types as objects, not strings.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import Response
from psycopg import Connection
from pydantic import BaseModel

from api import auth
from api import repo as api_repo
from api.deps import ERRORS, Admin, Conn, settings_of
from api.schemas import (
    CommunityRead,
    CommunityWrite,
    DeviceRegistryRead,
    DeviceWrite,
    GridRead,
    GridWrite,
    ImportResult,
    KpiRead,
    LinksRevoked,
    MerchantRead,
    MerchantWrite,
    MicroGridRead,
    MicroGridWrite,
    Page,
    Percentiles,
    Problem,
    RulesRead,
    SilenceCreate,
    SilenceRead,
    SiteRead,
    SiteWrite,
    TokenCreate,
    TokenCreated,
    TokenRead,
    WorkerRead,
    WorkerWrite,
)
from core import actionlink, registry
from core import repo as core_repo
from core.errors import ConflictError, NotFoundError
from notify import service as notify_service
from report import service as report_service
from rules.ruleset import rules_in_force
from score import policy as score_policy

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/admin", tags=["admin"], responses=ERRORS)
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
MAX_IMPORT_BYTES = 5 * 1024 * 1024
MAX_KPI_RANGE = timedelta(days=366)


def _next(offset: int, limit: int, n: int) -> int | None:
    return offset + limit if n == limit else None


# -- tokens -------------------------------------------------------------------------------------------------------


def _limited_to(who: auth.Principal) -> str:
    return ", ".join(who.community_scope or ())


def _check_token_scope(conn: Connection[Any], who: auth.Principal, body: TokenCreate) -> None:
    """An admin limited to some communities makes tokens for those only: their workers and merchants (others are
    "not in the registry", as unknown ones), and admin tokens limited to some of them."""
    scope = who.community_scope
    if scope is None:
        return
    if body.role == "admin":
        if not body.communities:
            raise HTTPException(
                403,
                f"your token is limited to {_limited_to(who)}: an admin token you make must be limited too "
                "(body.communities); only an admin of every community makes unlimited ones",
            )
        outside = sorted(set(body.communities) - set(scope))
        if outside:
            raise HTTPException(403, f"body.communities: your token is limited to {_limited_to(who)}, not {outside}")
    for table, subject in (("worker", body.worker_id), ("merchant", body.merchant_id)):
        if (
            subject is not None
            and body.role == table
            and not core_repo.in_communities(conn, table=table, id=subject, communities=scope)
        ):
            raise NotFoundError(f"{table} {subject!r} is not in the registry")


@router.post("/tokens", status_code=201, tags=["auth"])
def create_token(body: TokenCreate, request: Request, conn: Conn, who: Admin) -> TokenCreated:
    """Create a token for a person or integration; the token is shown only in this response. An admin token may
    be limited to some communities (a community's own admin); without `communities` it sees them all."""
    with conn.transaction():
        _check_token_scope(conn, who, body)
        token_id, token, expires = auth.create_token_row(
            conn,
            secret_key=settings_of(request).secret_key.get_secret_value(),
            role=body.role,
            worker_id=body.worker_id,
            merchant_id=body.merchant_id,
            label=body.label,
            ttl=timedelta(days=body.days),
            communities=body.communities,
        )
    log.info("token %s (%s) created by %s", token_id, body.role, who.actor)
    return TokenCreated(
        id=token_id,
        token=token,
        role=body.role,
        expires_at=expires,
        communities=sorted(set(body.communities)) if body.communities else None,
    )


@router.get("/tokens", tags=["auth"])
def list_tokens(conn: Conn, who: Admin, offset: Offset = 0, limit: Limit = 100) -> Page[TokenRead]:
    """Every token's metadata (never the secret); an admin limited to some communities sees those of their
    communities' workers and merchants and of admins limited within them."""
    rows = api_repo.list_tokens(conn, limit=limit, offset=offset, communities=who.community_scope)
    return Page[TokenRead](
        items=[TokenRead.model_validate(r) for r in rows], next_offset=_next(offset, limit, len(rows))
    )


@router.delete("/tokens/{token_id}", tags=["auth"], responses={409: {"model": Problem}})
def revoke_token(token_id: Annotated[int, Path(ge=1, le=2**62)], conn: Conn, who: Admin) -> TokenRead:
    """Revoke a token at once; web sessions opened with it end too."""
    with conn.transaction():
        row = api_repo.get_token(conn, token_id=token_id, communities=who.community_scope)
        if row is None:
            raise NotFoundError(f"token {token_id} not found")
        if row.revoked_at is not None:
            raise ConflictError(f"token {token_id} was already revoked at {row.revoked_at.isoformat()}")
        api_repo.revoke_token(conn, token_id=token_id)
        row = api_repo.get_token(conn, token_id=token_id)
    log.info("token %s revoked by %s", token_id, who.actor)
    return TokenRead.model_validate(row)


def _revoke_links(conn: Connection[Any], who: auth.Principal, kind: str, recipient_id: str) -> LinksRevoked:
    with conn.transaction():
        if not core_repo.in_communities(conn, table=kind, id=recipient_id, communities=who.community_scope):
            raise NotFoundError(f"{kind} {recipient_id!r} not found")
        link_kind: actionlink.RecipientKind = "worker" if kind == "worker" else "merchant"
        at = auth.revoke_links(conn, kind=link_kind, recipient_id=recipient_id, by=who.actor)
    log.info("links of %s %s revoked by %s", kind, recipient_id, who.actor)
    return LinksRevoked(recipient_kind=link_kind, recipient_id=recipient_id, not_before=at)


@router.post("/workers/{item_id}/revoke-links", tags=["auth"])
def revoke_worker_links(item_id: PathId, conn: Conn, who: Admin) -> LinksRevoked:
    """Refuse every alarm link sent to this worker so far (a lost phone): their later messages carry working links.
    Deactivating the worker (active: false) refuses all their links at once, too."""
    return _revoke_links(conn, who, "worker", item_id)


@router.post("/merchants/{item_id}/revoke-links", tags=["auth"])
def revoke_merchant_links(item_id: PathId, conn: Conn, who: Admin) -> LinksRevoked:
    """Refuse every alarm link sent to this merchant so far."""
    return _revoke_links(conn, who, "merchant", item_id)


# -- registry CRUD ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One registry object kind as the API serves it."""

    path: str
    table: str
    label: str
    write: type[BaseModel]
    read: type[BaseModel]
    upsert: Callable[[Connection[Any], str, Any], None]
    refs: tuple[tuple[str, str], ...] = ()  # (body field, table it must exist in)
    list_refs: tuple[tuple[str, str], ...] = ()  # (body list field, table every item must exist in)
    filters: tuple[str, ...] = ()  # parent columns the list can be filtered by
    extra_checks: tuple[Callable[[Connection[Any], Any, list[str] | None], None], ...] = field(default=())


def _gateway_is_gateway(conn: Connection[Any], body: DeviceWrite, communities: list[str] | None) -> None:
    if body.gateway_id is not None:
        gw = core_repo.get_registry(conn, table="device", id=body.gateway_id, communities=communities)
        if gw is None or gw["kind"] != "gateway":
            raise HTTPException(422, f"body.gateway_id: {body.gateway_id!r} is not a registered gateway")


KINDS: tuple[Kind, ...] = (
    Kind(
        "communities",
        "community",
        "community",
        CommunityWrite,
        CommunityRead,
        lambda c, i, b: core_repo.upsert_community(c, id=i, name=b.name, timezone=b.timezone, address=b.address),
    ),
    Kind(
        "grids",
        "grid",
        "grid",
        GridWrite,
        GridRead,
        lambda c, i, b: core_repo.upsert_grid(c, id=i, community_id=b.community_id, name=b.name),
        refs=(("community_id", "community"),),
        filters=("community_id",),
    ),
    Kind(
        "micro-grids",
        "micro_grid",
        "micro-grid",
        MicroGridWrite,
        MicroGridRead,
        lambda c, i, b: core_repo.upsert_micro_grid(c, id=i, grid_id=b.grid_id, name=b.name),
        refs=(("grid_id", "grid"),),
        filters=("grid_id",),
    ),
    Kind(
        "workers",
        "worker",
        "worker",
        WorkerWrite,
        WorkerRead,
        lambda c, i, b: core_repo.upsert_worker(
            c,
            id=i,
            community_id=b.community_id,
            name=b.name,
            role=b.role.value,
            phone=b.phone,
            locale=b.locale,
            notify=b.notify,
            roster=b.roster,
            on_call=b.on_call,
            active=b.active,
            micro_grids=b.micro_grids,
            grids=b.grids,
        ),
        refs=(("community_id", "community"),),
        list_refs=(("micro_grids", "micro_grid"), ("grids", "grid")),
        filters=("community_id",),
    ),
    Kind(
        "merchants",
        "merchant",
        "merchant",
        MerchantWrite,
        MerchantRead,
        lambda c, i, b: core_repo.upsert_merchant(
            c, id=i, community_id=b.community_id, name=b.name, contact=b.contact, phone=b.phone, notify=b.notify
        ),
        refs=(("community_id", "community"),),
        filters=("community_id",),
    ),
    Kind(
        "sites",
        "site",
        "site",
        SiteWrite,
        SiteRead,
        lambda c, i, b: core_repo.upsert_site(
            c,
            id=i,
            micro_grid_id=b.micro_grid_id,
            merchant_id=b.merchant_id,
            kind=b.kind.value,
            name=b.name,
            address=b.address,
            floor=b.floor,
            flags=b.flags,
            lpg=b.lpg,
            building=b.building,
            lat=b.lat,
            lon=b.lon,
        ),
        refs=(("micro_grid_id", "micro_grid"), ("merchant_id", "merchant")),
        filters=("micro_grid_id", "merchant_id"),
    ),
    Kind(
        "devices",
        "device",
        "device",
        DeviceWrite,
        DeviceRegistryRead,
        lambda c, i, b: core_repo.upsert_device(
            c,
            id=i,
            kind=b.kind.value,
            site_id=b.site_id,
            location=b.location.value,
            adapter=b.adapter.value,
            foreign_id=b.foreign_id,
            battery=b.battery,
            report_interval_s=b.report_interval_s or registry.DEFAULT_INTERVAL_S[b.battery],
            gateway_id=b.gateway_id,
            model=b.model,
            mounting=b.mounting.value if b.mounting else None,
            active=b.active,
        ),
        refs=(("site_id", "site"),),
        filters=("site_id",),
        extra_checks=(_gateway_is_gateway,),
    ),
)


def _check_refs(conn: Connection[Any], kind: Kind, body: BaseModel, communities: list[str] | None) -> None:
    """References must exist (for an admin limited to some communities: in those): 422 naming the field (not a
    foreign-key error), the same answer for an object outside one's communities as for one that does not exist."""
    for attr, table in kind.refs:
        value = getattr(body, attr)
        if value is not None and not core_repo.in_communities(conn, table=table, id=value, communities=communities):
            raise HTTPException(422, f"body.{attr}: {table.replace('_', '-')} {value!r} does not exist")
    for attr, table in kind.list_refs:
        for value in getattr(body, attr):
            if not core_repo.in_communities(conn, table=table, id=value, communities=communities):
                raise HTTPException(422, f"body.{attr}: {table.replace('_', '-')} {value!r} does not exist")
    for check in kind.extra_checks:
        check(conn, body, communities)


def _check_writable(conn: Connection[Any], kind: Kind, item_id: str, who: auth.Principal) -> None:
    """An admin limited to some communities writes only inside them: another community (existing or new) is 403
    whichever it is, an existing object of another community 404, as if it did not exist."""
    scope = who.community_scope
    if scope is None:
        return
    if kind.table == "community":
        if item_id not in scope:
            raise HTTPException(
                403,
                f"your token is limited to {_limited_to(who)}: adding or changing another community needs an "
                "admin of every community (a street office)",
            )
    elif core_repo.exists(conn, table=kind.table, id=item_id) and not core_repo.in_communities(
        conn, table=kind.table, id=item_id, communities=scope
    ):
        raise NotFoundError(f"{kind.label} {item_id!r} not found")


def _add_crud(app_router: APIRouter, kind: Kind) -> None:
    read, write = kind.read, kind.write
    tag = f"registry: {kind.path}"

    def list_items(
        conn: Conn,
        who: Admin,
        offset: Offset = 0,
        limit: Limit = 100,
        parent: Annotated[
            str | None,
            Query(
                max_length=64, alias=kind.filters[0] if kind.filters else "parent", include_in_schema=bool(kind.filters)
            ),
        ] = None,
    ) -> Page[Any]:
        filters = {kind.filters[0]: parent} if kind.filters else {}
        rows = core_repo.list_registry(
            conn, table=kind.table, limit=limit, offset=offset, filters=filters, communities=who.community_scope
        )
        return Page[read](  # type: ignore[valid-type]
            items=[read.model_validate(r) for r in rows],
            next_offset=_next(offset, limit, len(rows)),
        )

    def get_item(item_id: PathId, conn: Conn, who: Admin) -> Any:
        row = core_repo.get_registry(conn, table=kind.table, id=item_id, communities=who.community_scope)
        if row is None:
            raise NotFoundError(f"{kind.label} {item_id!r} not found")
        return read.model_validate(row)

    def put_item(item_id: PathId, body: write, conn: Conn, who: Admin) -> Any:  # type: ignore[valid-type]
        with conn.transaction():
            _check_writable(conn, kind, item_id, who)
            _check_refs(conn, kind, body, who.community_scope)
            kind.upsert(conn, item_id, body)
            row = core_repo.get_registry(conn, table=kind.table, id=item_id)
        log.info("%s %s written by %s", kind.label, item_id, who.actor)
        return read.model_validate(row)

    def delete_item(item_id: PathId, conn: Conn, who: Admin) -> Response:
        with conn.transaction():
            if core_repo.get_registry(conn, table=kind.table, id=item_id, communities=who.community_scope) is None:
                raise NotFoundError(f"{kind.label} {item_id!r} not found")
            deps = core_repo.registry_dependents(conn, table=kind.table, id=item_id)
            if deps:
                what = ", ".join(f"{n} {k}(s)" for k, n in deps.items())
                raise ConflictError(
                    f"{kind.label} {item_id!r} is still referenced by {what}; "
                    f"remove or move those first"
                    + (" (or set active: false)" if kind.table in ("worker", "device") else "")
                )
            core_repo.delete_registry(conn, table=kind.table, id=item_id)
        log.info("%s %s deleted by %s", kind.label, item_id, who.actor)
        return Response(status_code=204)

    base = f"/{kind.path}"
    list_items.__doc__ = f"Registered {kind.path}, by id (paginated)."
    get_item.__doc__ = f"One {kind.label}."
    put_item.__doc__ = f"Create or replace a {kind.label} (idempotent, like `gridwatch load`)."
    delete_item.__doc__ = f"Delete a {kind.label}; refused (409) while anything still refers to it."
    app_router.add_api_route(
        base,
        list_items,
        methods=["GET"],
        response_model=Page[read],  # type: ignore[valid-type]
        tags=[tag],
        name=f"list_{kind.table}s",
    )
    app_router.add_api_route(
        base + "/{item_id}", get_item, methods=["GET"], response_model=read, tags=[tag], name=f"get_{kind.table}"
    )
    app_router.add_api_route(
        base + "/{item_id}", put_item, methods=["PUT"], response_model=read, tags=[tag], name=f"put_{kind.table}"
    )
    app_router.add_api_route(
        base + "/{item_id}",
        delete_item,
        methods=["DELETE"],
        status_code=204,
        tags=[tag],
        name=f"delete_{kind.table}",
        responses={409: {"model": Problem}},
        response_class=Response,
    )


for _kind in KINDS:
    _add_crud(router, _kind)


@router.post(
    "/import",
    tags=["registry"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/yaml": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    },
)
async def import_registry(request: Request, who: Admin) -> ImportResult:
    """Bulk import: the same YAML as `gridwatch load` (idempotent upsert); errors name the line."""
    body = await request.body()
    if len(body) > MAX_IMPORT_BYTES:
        raise HTTPException(413, f"registry file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB; split it")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(422, "body: the registry file must be UTF-8 text") from None
    try:
        parsed = registry.parse_registry(text, "body")
    except yaml.YAMLError as exc:  # e.g. control characters: not a MarkedYAMLError, so parse_registry lets it by
        raise HTTPException(422, f"body: not valid YAML: {exc}") from None
    scope = who.community_scope
    if scope is not None and parsed.community.id not in scope:
        raise HTTPException(
            403, f"your token is limited to {_limited_to(who)}: it cannot import community {parsed.community.id!r}"
        )

    def write() -> dict[str, int]:
        with request.app.state.pool.connection() as conn, conn.transaction():
            return core_repo.upsert_registry(conn, registry=parsed)

    from starlette.concurrency import run_in_threadpool

    counts = await run_in_threadpool(write)
    log.info("registry %s imported by %s: %s", parsed.community.id, who.actor, counts)
    return ImportResult(community=parsed.community.id, counts=counts)


# -- silences -------------------------------------------------------------------------------------------------------


@router.get("/silences", tags=["silences"])
def list_silences(
    conn: Conn, who: Admin, current: bool = True, offset: Offset = 0, limit: Limit = 100
) -> Page[SilenceRead]:
    """Maintenance windows (current: only those not over yet) of the caller's communities."""
    rows = notify_service.list_silences(
        conn, now=datetime.now(UTC), current=current, limit=limit, offset=offset, communities=who.community_scope
    )
    return Page[SilenceRead](items=[SilenceRead.of(r) for r in rows], next_offset=_next(offset, limit, len(rows)))


@router.post("/silences", status_code=201, tags=["silences"])
def create_silence(body: SilenceCreate, conn: Conn, who: Admin) -> SilenceRead:
    """Silence a site or a device for a while; life-safety alarms stay loud unless include_life_safety."""
    now = datetime.now(UTC)
    if body.starts_at is None and body.ends_at <= now:
        raise HTTPException(422, "body.ends_at: must be in the future")
    start = body.starts_at or now
    with conn.transaction():
        scope = who.community_scope
        if body.site_id and not core_repo.in_communities(conn, table="site", id=body.site_id, communities=scope):
            raise HTTPException(422, f"body.site_id: site {body.site_id!r} does not exist")
        if body.device_id and not core_repo.in_communities(conn, table="device", id=body.device_id, communities=scope):
            raise HTTPException(422, f"body.device_id: device {body.device_id!r} does not exist")
        made = notify_service.create_silence(
            conn,
            site_id=body.site_id,
            device_id=body.device_id,
            starts_at=start,
            minutes=(body.ends_at - start).total_seconds() / 60,
            reason=body.reason,
            created_by=who.actor,
            include_life_safety=body.include_life_safety,
            now=now,
        )
    return SilenceRead.of(made)


@router.delete("/silences/{silence_id}", tags=["silences"], status_code=204, response_class=Response)
def delete_silence(silence_id: Annotated[int, Path(ge=1, le=2**62)], conn: Conn, who: Admin) -> Response:
    """End a silence now (a planned one is cancelled); it stays in the list of past windows."""
    with conn.transaction():
        notify_service.get_silence(conn, silence_id=silence_id, communities=who.community_scope)
        notify_service.end_silence(conn, silence_id=silence_id, now=datetime.now(UTC))
    log.info("silence %s ended by %s", silence_id, who.actor)
    return Response(status_code=204)


# -- rules and policy -------------------------------------------------------------------------------------------------


@router.get("/rules", tags=["rules"])
def get_rules_in_force(request: Request, _who: Admin) -> RulesRead:
    """The alarm rules (GRIDWATCH_RULES_FILE or the shipped ones) and the merchant score policy in force."""
    ruleset = rules_in_force(settings_of(request).rules_file)
    policy = score_policy.active_policies().model_dump(mode="json")
    return RulesRead(rules=[r.model_dump(mode="json") for r in ruleset.rules], score_policy=policy)


# -- KPIs -------------------------------------------------------------------------------------------------------------


def kpis(
    conn: Connection[Any],
    *,
    scope: str,
    scope_id: str,
    since: datetime | None,
    until: datetime | None,
    communities: list[str] | None = None,
) -> KpiRead:
    """KPIs for alarms raised in [since, until) (default: the last 30 days); a community or grid outside
    `communities` (when given) is not found."""
    table = "community" if scope == "community" else "grid"
    if not core_repo.in_communities(conn, table=table, id=scope_id, communities=communities):
        raise NotFoundError(f"{table} {scope_id!r} not found")
    now = datetime.now(UTC)
    until = until or now
    try:
        since = since or until - timedelta(days=30)
    except OverflowError:
        raise HTTPException(422, "until: too early to take a default 30-day range before it") from None
    if since.tzinfo is None or until.tzinfo is None:
        raise HTTPException(422, "since/until: give a time zone (e.g. 2026-01-01T00:00:00+08:00)")
    if since >= until:
        raise HTTPException(422, "since: must be before until")
    if until - since > MAX_KPI_RANGE:
        raise HTTPException(422, f"until: the range is limited to {MAX_KPI_RANGE.days} days")
    # The same computation as the reports' (report/service.py), so a report and the KPI API agree.
    k = report_service.compute_kpis(
        conn,
        scope=report_service.Scope("community" if scope == "community" else "grid", scope_id),
        since=since,
        until=until,
    )
    last = k.last_real_hazard_at
    return KpiRead(
        scope=scope,
        id=scope_id,
        since=since,
        until=until,
        alarms=k.alarms,
        alarms_by_type=k.by_type,
        acknowledged=k.acknowledged,
        resolved=k.resolved,
        time_to_acknowledge=Percentiles(p50_s=k.ack_p50, p90_s=k.ack_p90),
        time_to_resolve=Percentiles(p50_s=k.resolve_p50, p90_s=k.resolve_p90),
        unreached_notifications=k.unreached,
        devices=k.devices,
        devices_offline=k.offline,
        devices_never_seen=k.never_seen,
        devices_not_commissioned=k.not_commissioned,
        last_real_hazard_at=last,
        days_without_real_hazard=None if last is None else max(0, (now - last).days),
    )


@router.get("/kpis/communities/{community_id}", tags=["kpis"])
def community_kpis(
    community_id: PathId, conn: Conn, who: Admin, since: datetime | None = None, until: datetime | None = None
) -> KpiRead:
    """A community's KPIs: alarms by type, time to acknowledge and resolve (p50/p90), unreached notifications,
    devices offline, days without a real hazard."""
    return kpis(
        conn, scope="community", scope_id=community_id, since=since, until=until, communities=who.community_scope
    )


@router.get("/kpis/grids/{grid_id}", tags=["kpis"])
def grid_kpis(
    grid_id: PathId, conn: Conn, who: Admin, since: datetime | None = None, until: datetime | None = None
) -> KpiRead:
    """A grid's KPIs (as for a community)."""
    return kpis(conn, scope="grid", scope_id=grid_id, since=since, until=until, communities=who.community_scope)


def include(app: FastAPI) -> None:
    """Mount the admin routes."""
    app.include_router(router)
