"""The map's picture, pure: sites grouped into buildings, micro-grids and grids, a building's state from its live
alarms and devices, and Web-Mercator placement into an inline SVG (no tiles from outside; an optional local tile
source is drawn underneath)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from api.map_repo import MapSite
from core.domain import Severity

WIDTH = 1000.0  # the SVG's user units across: markers and labels keep their size at any zoom
PAD = 60.0
MAX_ZOOM = 19
TILE = 256


@dataclass(slots=True)
class Building:
    """One marker: the sites of a building (or one site on its own), its place and its state."""

    key: str
    name: str
    grid_id: str
    grid_name: str
    micro_grid_id: str
    micro_grid_name: str
    sites: list[MapSite] = field(default_factory=list)
    x: float | None = None
    y: float | None = None

    @property
    def worst(self) -> int | None:
        return max((s.worst for s in self.sites if s.worst is not None), default=None)

    @property
    def state(self) -> str:
        """sev-critical | sev-major | sev-minor | sev-info (an open alarm), work-order (a hazard found on foot and
        not yet closed by a re-inspection), offline (a device), or clear."""
        worst = self.worst
        if worst is not None:
            return f"sev-{Severity(worst).label}"
        if self.open_work_orders:
            return "work-order"
        return "offline" if any(s.offline for s in self.sites) else "clear"

    @property
    def open_alarms(self) -> int:
        return sum(s.open_alarms for s in self.sites)

    @property
    def open_work_orders(self) -> int:
        return sum(s.open_work_orders for s in self.sites)

    @property
    def devices(self) -> int:
        return sum(s.devices for s in self.sites)

    @property
    def offline(self) -> int:
        return sum(s.offline for s in self.sites)

    @property
    def placed(self) -> bool:
        return self.x is not None


@dataclass(slots=True)
class MicroGrid:
    id: str
    name: str
    buildings: list[Building] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None  # x, y, width, height around its placed buildings


@dataclass(slots=True)
class Grid:
    id: str
    name: str
    micro_grids: list[MicroGrid] = field(default_factory=list)


@dataclass(slots=True)
class Tile:
    href: str
    x: float
    y: float
    size: float


@dataclass(slots=True)
class MapView:
    grids: list[Grid]
    buildings: list[Building]
    view_box: str
    height: float
    zoom: int
    scale: float
    tiles: list[Tile]

    @property
    def placed(self) -> list[Building]:
        return [b for b in self.buildings if b.placed]

    @property
    def unplaced(self) -> list[Building]:
        return [b for b in self.buildings if not b.placed]


def group(sites: list[MapSite]) -> tuple[list[Grid], list[Building]]:
    """Grids → micro-grids → buildings, in the order the sites came (by id)."""
    grids: dict[str, Grid] = {}
    micro: dict[str, MicroGrid] = {}
    buildings: dict[str, Building] = {}
    for s in sites:
        b = buildings.get(s.building)
        if b is None:
            b = buildings[s.building] = Building(
                s.building, s.building, s.grid_id, s.grid_name, s.micro_grid_id, s.micro_grid_name
            )
            grid = grids.setdefault(s.grid_id, Grid(s.grid_id, s.grid_name))
            mg = micro.get(s.micro_grid_id)
            if mg is None:
                mg = micro[s.micro_grid_id] = MicroGrid(s.micro_grid_id, s.micro_grid_name)
                grid.micro_grids.append(mg)
            mg.buildings.append(b)
        b.sites.append(s)
        if s.id == s.building or len(b.sites) == 1:
            b.name = s.name or s.id
    for b in buildings.values():
        if len(b.sites) > 1 and all(s.id != b.key for s in b.sites):
            b.name = f"{b.key} · {len(b.sites)}"
    return list(grids.values()), list(buildings.values())


def _world(lat: float, lon: float) -> tuple[float, float]:
    """Web-Mercator pixels at zoom 0 (a 256-pixel world)."""
    lat = max(-85.0511, min(85.0511, lat))
    x = (lon + 180.0) / 360.0 * TILE
    s = math.sin(math.radians(lat))
    y = (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * TILE
    return x, y


def build(sites: list[MapSite], *, tile_url: str = "") -> MapView:
    """Place every building at the mean of its sites' coordinates, at the largest zoom where the whole community
    fits WIDTH units across; micro-grids get a box around their buildings."""
    grids, buildings = group(sites)
    points: dict[str, tuple[float, float]] = {}
    for b in buildings:
        placed = [(s.lat, s.lon) for s in b.sites if s.lat is not None and s.lon is not None]
        if placed:
            points[b.key] = _world(sum(p[0] for p in placed) / len(placed), sum(p[1] for p in placed) / len(placed))
    if not points:
        return MapView(grids, buildings, f"0 0 {WIDTH:.0f} 200", 200.0, 0, 1.0, [])
    xs = [p[0] for p in points.values()]
    ys = [p[1] for p in points.values()]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-9)
    zoom = max(0, min(MAX_ZOOM, math.floor(math.log2((WIDTH - 2 * PAD) / span))))
    scale = 2.0**zoom
    min_x, min_y = min(xs) * scale - PAD, min(ys) * scale - PAD
    width = max(WIDTH, (max(xs) - min(xs)) * scale + 2 * PAD)
    height = max(200.0, (max(ys) - min(ys)) * scale + 2 * PAD)
    for b in buildings:
        if b.key in points:
            b.x = points[b.key][0] * scale - min_x
            b.y = points[b.key][1] * scale - min_y
    for grid in grids:
        for mg in grid.micro_grids:
            mine = [(b.x, b.y) for b in mg.buildings if b.x is not None and b.y is not None]
            if mine:
                left, top = min(p[0] for p in mine) - 26, min(p[1] for p in mine) - 40
                mg.box = (left, top, max(p[0] for p in mine) + 26 - left, max(p[1] for p in mine) + 26 - top)
    tiles = _tiles(tile_url, zoom, min_x, min_y, width, height) if tile_url else []
    return MapView(grids, buildings, f"0 0 {width:.0f} {height:.0f}", height, zoom, scale, tiles)


def _tiles(url: str, zoom: int, min_x: float, min_y: float, width: float, height: float) -> list[Tile]:
    """The local tile source's tiles under the drawing (an {z}/{x}/{y} URL on our own host)."""
    n = 2**zoom
    found = []
    for tx in range(math.floor(min_x / TILE), math.floor((min_x + width) / TILE) + 1):
        for ty in range(math.floor(min_y / TILE), math.floor((min_y + height) / TILE) + 1):
            if 0 <= ty < n:
                href = url.replace("{z}", str(zoom)).replace("{x}", str(tx % n)).replace("{y}", str(ty))
                found.append(Tile(href, tx * TILE - min_x, ty * TILE - min_y, TILE))
    return found
