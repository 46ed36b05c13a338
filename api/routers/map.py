"""The map (issue 22): the caller's buildings and sites placed by their registry coordinates, grouped by grid and
micro-grid, coloured by live state and updated over the alarm stream; a building opens its floors with each
device's state. Admins see their communities, workers their micro-grids (as on the board)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from api import map_repo, mapview
from api.deps import Conn, Staff, settings_of
from api.stream import alarm_stream
from core import repo as core_repo
from core.errors import NotFoundError

router = APIRouter(include_in_schema=False)
BuildingKey = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]


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
        {b.key: {"state": b.state, "open": b.open_alarms, "offline": b.offline} for b in buildings},
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
    return render(request, "building.html", who, building=building, title=name, floors=floors, sites=sites)
