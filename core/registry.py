"""The community registry file: YAML parsed with line numbers, validated with pydantic."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.domain import Adapter, DeviceKind, Location, Mounting, SiteKind, WorkerRole
from core.errors import RegistryError

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]

ROSTER_RE = re.compile(
    r"^(?P<days>(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(-(Mon|Tue|Wed|Thu|Fri|Sat|Sun))?"
    r"(,(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(-(Mon|Tue|Wed|Thu|Fri|Sat|Sun))?)*)"
    r"\s+(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})$"
)

# Offline-after defaults by power source follow RULES-REFERENCE section 5: battery LPWAN devices report
# daily, mains devices every few minutes.
DEFAULT_INTERVAL_S = {True: 24 * 3600, False: 300}


# A community's sites on the map lie within this many degrees (about 10 km) of each other.
MAX_SPREAD_DEG = 0.1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MicroGridIn(_Strict):
    id: Id
    name: str


class GridIn(_Strict):
    id: Id
    name: str
    micro_grids: list[MicroGridIn] = Field(default_factory=list)


class CommunityIn(_Strict):
    id: Id
    name: str
    timezone: str = "Asia/Shanghai"
    address: str = ""


class WorkerIn(_Strict):
    id: Id
    name: str
    role: WorkerRole
    phone: str = ""
    locale: str = Field(default="zh-CN", pattern=r"^(zh-CN|en)$")
    notify: list[str] = Field(default_factory=list, description="apprise URLs")
    micro_grids: list[Id] = Field(default_factory=list)
    grids: list[Id] = Field(default_factory=list)
    roster: str | None = Field(default=None, description='e.g. "Mon-Fri 09:00-17:00"; none = always')
    on_call: bool = False

    @field_validator("roster")
    @classmethod
    def _roster(cls, value: str | None) -> str | None:
        if value is not None:
            for part in value.split(";"):
                if not ROSTER_RE.match(part.strip()):
                    raise ValueError(f'roster {part.strip()!r} is not like "Mon-Fri 09:00-17:00"')
        return value

    @field_validator("notify")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if "://" not in url:
                raise ValueError(f"{url!r} is not an apprise URL (scheme://...)")
        return value


class MerchantIn(_Strict):
    id: Id
    name: str
    contact: str = ""
    phone: str = ""
    notify: list[str] = Field(default_factory=list)


class SiteIn(_Strict):
    id: Id
    kind: SiteKind
    name: str = ""
    micro_grid: Id
    merchant: Id | None = None
    address: str = ""
    floor: int | None = None
    flags: list[str] = Field(default_factory=list)
    lpg: bool = False
    building: Id | None = Field(default=None, description="the building a shop or storage unit is in (DEV-03)")
    # Where it is on the map (issue 22): WGS-84 degrees, both or neither.
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)

    @model_validator(mode="after")
    def _both_coordinates(self) -> SiteIn:
        if (self.lat is None) != (self.lon is None):
            raise ValueError(f"site {self.id}: give both lat and lon, or neither")
        return self


class DeviceIn(_Strict):
    id: Id
    kind: DeviceKind
    site: Id
    location: Location
    adapter: Adapter = Adapter.NATIVE
    foreign_id: str | None = None
    battery: bool = False
    report_interval_s: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    gateway: Id | None = None
    model: str = ""
    mounting: Mounting | None = Field(
        default=None,
        description="floor | ceiling | wall: within 0.3 m of the "
        "floor, of the ceiling, or between (gas detectors, GAS-08)",
    )

    @property
    def interval_s(self) -> int:
        return self.report_interval_s or DEFAULT_INTERVAL_S[self.battery]


class RegistryIn(_Strict):
    community: CommunityIn
    grids: list[GridIn] = Field(default_factory=list)
    workers: list[WorkerIn] = Field(default_factory=list)
    merchants: list[MerchantIn] = Field(default_factory=list)
    sites: list[SiteIn] = Field(default_factory=list)
    devices: list[DeviceIn] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> RegistryIn:
        self._check_unique_ids()
        self._check_worker_references()
        self._check_site_spread()
        self._check_site_references()
        self._check_device_references()
        return self

    def _check_unique_ids(self) -> None:
        """No two grids, micro-grids, workers, merchants, sites or devices share an id."""
        for kind, ids in (
            ("grid", [g.id for g in self.grids]),
            ("micro_grid", [m.id for g in self.grids for m in g.micro_grids]),
            ("worker", [w.id for w in self.workers]),
            ("merchant", [m.id for m in self.merchants]),
            ("site", [s.id for s in self.sites]),
            ("device", [d.id for d in self.devices]),
        ):
            seen: set[str] = set()
            for item in ids:
                if item in seen:
                    raise ValueError(f"duplicate {kind} id {item!r}")
                seen.add(item)

    def _check_worker_references(self) -> None:
        """Every micro-grid a worker covers and every grid a worker leads exists."""
        micro = {m.id for g in self.grids for m in g.micro_grids}
        grids = {g.id for g in self.grids}
        for w in self.workers:
            for mg in w.micro_grids:
                if mg not in micro:
                    raise ValueError(f"worker {w.id!r} covers unknown micro_grid {mg!r}")
            for g in w.grids:
                if g not in grids:
                    raise ValueError(f"worker {w.id!r} leads unknown grid {g!r}")

    def _check_site_spread(self) -> None:
        """A community's placed sites lie within MAX_SPREAD_DEG of each other: a site far from the rest has its
        coordinates mistyped or swapped (lat for lon)."""
        placed = sorted((s.lat, s.lon, s.id) for s in self.sites if s.lat is not None and s.lon is not None)
        if len(placed) < 2:
            return
        mid_lat = sorted(p[0] for p in placed)[len(placed) // 2]
        mid_lon = sorted(p[1] for p in placed)[len(placed) // 2]
        for lat, lon, site_id in placed:
            if abs(lat - mid_lat) > MAX_SPREAD_DEG or abs(lon - mid_lon) > MAX_SPREAD_DEG:
                raise ValueError(
                    f"site {site_id}: lat {lat}, lon {lon} is more than {MAX_SPREAD_DEG} degrees from the community's "
                    f"other sites (around {mid_lat}, {mid_lon}); are lat and lon mistyped or swapped?"
                )

    def _check_site_references(self) -> None:
        """Every site's micro-grid and merchant exist."""
        micro = {m.id for g in self.grids for m in g.micro_grids}
        merchants = {m.id for m in self.merchants}
        for s in self.sites:
            if s.micro_grid not in micro:
                raise ValueError(f"site {s.id!r} is in unknown micro_grid {s.micro_grid!r}")
            if s.merchant is not None and s.merchant not in merchants:
                raise ValueError(f"site {s.id!r} names unknown merchant {s.merchant!r}")

    def _check_device_references(self) -> None:
        """Every device's site exists, its gateway is a gateway, and a bridged device has its foreign id."""
        sites = {s.id for s in self.sites}
        devices = {d.id: d for d in self.devices}
        for d in self.devices:
            if d.site not in sites:
                raise ValueError(f"device {d.id!r} is at unknown site {d.site!r}")
            if d.gateway is not None:
                gateway = devices.get(d.gateway)
                if gateway is None or gateway.kind is not DeviceKind.GATEWAY:
                    raise ValueError(f"device {d.id!r} names {d.gateway!r} as gateway, which is no gateway")
            if d.adapter is not Adapter.NATIVE and not d.foreign_id:
                raise ValueError(f"device {d.id!r} uses adapter {d.adapter} but has no foreign_id")


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Follow a pydantic error location through the composed YAML tree to its line (1-based)."""
    best = node
    for key in loc:
        if node is None:
            break
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            node = None
        if node is not None:
            best = node
    return best.start_mark.line + 1 if best is not None else None


def _line_of_id(root: yaml.Node | None, message: str) -> int | None:
    """For cross-reference errors ("device 'x' is at unknown site ..."): the line of the object named first."""
    match = re.search(r"'([^']+)'", message)
    if match is None or root is None:
        return None
    wanted = match.group(1)
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == "id" and isinstance(value, yaml.ScalarNode) and value.value == wanted:
                    return int(node.start_mark.line) + 1
            stack.extend(v for _, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return None


def parse_registry(text: str, source: str = "<registry>") -> RegistryIn:
    """Parse and validate a registry document; errors name the file and line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.reader.ReaderError as exc:
        raise RegistryError(f"{source}: not valid YAML text: {exc.reason} at character {exc.position}") from exc
    except yaml.MarkedYAMLError as exc:
        where = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise RegistryError(f"{source}:{where}: not valid YAML: {exc.problem}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"{source}:1: a registry is a mapping with community, grids, workers, sites, devices")
    try:
        return RegistryIn.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line: int | None = _line_of(root, loc) if loc else _line_of_id(root, err["msg"])
            where = ".".join(str(p) for p in loc) or "(document)"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{source}:{line or '?'}: {where}: {msg}")
        raise RegistryError("\n".join(lines)) from None


def read_registry(path: Path) -> RegistryIn:
    """Read a registry file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_registry(text, str(path))
