"""The map (issue 22): the caller's buildings and sites placed by their registry coordinates, grouped by grid and
micro-grid, coloured by live state and updated over the alarm stream; a building opens its floors with each
device's state. Admins see their communities, workers their micro-grids (as on the board)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from psycopg import Connection

from api import auth, map_repo, mapview
from api.deps import ERRORS, Admin, Conn, Staff, settings_of
from api.stream import alarm_stream
from core import repo as core_repo
from core.errors import NotFoundError
from field import photos

router = APIRouter(include_in_schema=False)
BuildingKey = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Floor = Annotated[int, PathParam(ge=-10, le=200)]
MAX_PLAN_BYTES = 2 * 1024 * 1024
# Every phone that opens the building page decodes the plan: a PNG of one colour compresses a thousandfold, so
# 2 MiB can hold gigapixels. 24 megapixels (6000×4000) is a sharp plan on any screen.
MAX_PLAN_PIXELS = 24_000_000
# A floor plan is a picture, checked by its bytes (never the client's word): PNG or JPEG whose structure reads, as
# field photos are (field/photos.py: a polyglot's or a truncated file is refused). SVG is refused, as it can carry
# script.
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


CommunityId = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]


@router.get("/map")
def map_page(request: Request, conn: Conn, who: Staff, community: CommunityId = None) -> HTMLResponse:
    """Every building the caller may see on one picture (or those of one community), and the same as a list by
    grid and micro-grid."""
    from api.pages import render

    scope = who.community_scope
    communities = core_repo.list_registry(conn, table="community", limit=100, offset=0, filters={}, communities=scope)
    if community is not None:
        if community not in {c["id"] for c in communities}:
            raise NotFoundError(f"community {community!r} not found")
        scope = [community]
    sites = map_repo.list_map_sites(conn, worker_id=who.worker_scope, communities=scope)
    view = mapview.build(sites, tile_url=settings_of(request).map_tile_url)
    choices = communities if who.worker_scope is None and len(communities) > 1 else []
    return render(request, "map.html", who, view=view, communities=choices, community=community)


@router.get("/map/state")
def map_state(conn: Conn, who: Staff) -> JSONResponse:
    """Each building's live state (what the map's script recolours after an alarm changes)."""
    sites = map_repo.list_map_sites(conn, worker_id=who.worker_scope, communities=who.community_scope)
    _, buildings = mapview.group(sites)
    return JSONResponse(
        {
            b.key: {"state": b.state, "open": b.open_alarms, "work_orders": b.open_work_orders, "offline": b.offline}
            for b in buildings
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/map/stream")
async def map_stream(
    request: Request, who: Staff, max_s: Annotated[float | None, Query(gt=0, le=3600)] = None
) -> StreamingResponse:
    """The map's live feed: the site of each alarm that changed (the script then asks /map/state)."""
    return alarm_stream(request, who, max_s, lambda row: json.dumps({"id": row.id, "site": row.site_id}))


@router.get("/map/buildings/{building}")
def building_page(building: BuildingKey, request: Request, conn: Conn, who: Staff) -> HTMLResponse:
    """A building floor by floor (top floor first): its sites and each device's state."""
    from api.pages import render

    rows = map_repo.list_building_devices(
        conn, building=building, worker_id=who.worker_scope, communities=who.community_scope
    )
    if not rows:
        raise NotFoundError(f"building {building!r} not found")
    floors: dict[int | None, dict[str, list[map_repo.FloorDevice]]] = {}
    for row in rows:
        floors.setdefault(row.floor, {}).setdefault(row.site_id, []).append(row)
    sites = {row.site_id: row for row in rows}
    name = next((r.site_name for r in rows if r.site_id == building), building)
    plans = map_repo.planned_floors(conn, building=building)
    return render(request, "building.html", who, building=building, title=name, floors=floors, sites=sites, plans=plans)


@router.get("/map/buildings/{building}/floors/{floor}/plan")
def floor_plan_image(building: BuildingKey, floor: Floor, conn: Conn, who: Staff) -> Response:
    """One floor's plan image (of a building the caller may see)."""
    plan = None
    if map_repo.building_in_scope(conn, building=building, worker_id=who.worker_scope, communities=who.community_scope):
        plan = map_repo.get_floor_plan(conn, building=building, floor=floor)
    if plan is None:
        raise NotFoundError(f"no plan of floor {floor} of building {building!r}")
    return Response(plan[1], media_type=plan[0], headers={"Cache-Control": "private, max-age=300"})


def _admin_building(conn: Connection[Any], who: auth.Principal, building: str) -> None:
    if not map_repo.building_in_scope(conn, building=building, worker_id=None, communities=who.community_scope):
        raise NotFoundError(f"building {building!r} not found")


@router.put(
    "/api/v1/admin/floor-plans/{building}/{floor}",
    include_in_schema=True,
    tags=["map"],
    responses=ERRORS,
    status_code=204,
    response_class=Response,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_MAGIC.values()},
        }
    },
)
async def put_floor_plan(building: BuildingKey, floor: Floor, request: Request, conn: Conn, who: Admin) -> Response:
    """Upload a floor's plan (PNG or JPEG, up to 2 MiB) for the map's building page; replaces the one before."""
    body = await request.body()
    if len(body) > MAX_PLAN_BYTES:
        raise HTTPException(413, f"body: a floor plan is at most {MAX_PLAN_BYTES // (1024 * 1024)} MiB")
    kind = next((t for magic, t in IMAGE_MAGIC.items() if body.startswith(magic)), None)
    if kind is None:
        raise HTTPException(422, "body: a floor plan must be a PNG or JPEG image")
    try:
        image = photos.inspect_photo(body)
    except photos.PhotoError as exc:
        raise HTTPException(422, f"body: a floor plan must be a PNG or JPEG image: {exc}") from None
    if image.width * image.height > MAX_PLAN_PIXELS:
        raise HTTPException(
            422, f"body: a floor plan of {image.width}×{image.height} pixels; at most {MAX_PLAN_PIXELS:,} pixels"
        )

    # The request's connection (held for its credentials already): a second one, taken in a thread behind no gate,
    # let ten uploads at once hold the pool's ten and each wait for an eleventh.
    def write() -> None:
        with conn.transaction():
            _admin_building(conn, who, building)
            map_repo.put_floor_plan(conn, building=building, floor=floor, content_type=kind, data=body, by=who.actor)

    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(write)
    return Response(status_code=204)


@router.delete(
    "/api/v1/admin/floor-plans/{building}/{floor}",
    include_in_schema=True,
    tags=["map"],
    responses=ERRORS,
    status_code=204,
    response_class=Response,
)
def delete_floor_plan(building: BuildingKey, floor: Floor, conn: Conn, who: Admin) -> Response:
    """Remove a floor's plan (the building page then lists that floor's devices only)."""
    with conn.transaction():
        _admin_building(conn, who, building)
        if not map_repo.delete_floor_plan(conn, building=building, floor=floor):
            raise NotFoundError(f"no plan of floor {floor} of building {building!r}")
    return Response(status_code=204)
