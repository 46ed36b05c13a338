"""docker-compose.yml read the way compose reads it, to run its services as processes on this machine.

There is no Docker engine here, so the deployment rehearsal plays compose's part: it interpolates the file's
variables (`${VAR:?message}`, `${VAR:-default}`, `$$`), resolves YAML anchors and merge keys, orders the services
by `depends_on`, and stands in for the container network: a service's hostname (`timescaledb`, `mosquitto`) and
container port map to where the test started that server, and every port a service listens on (`*_PORT`
variables, `listener` lines) gets a free port of its own, as every container has its own network namespace.
Volumes map container paths to host folders. Nothing here copies a command, a variable or a path out of the
compose file by hand: a change to the file changes what the rehearsal runs.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from core.embedded import free_port
from tests.conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
GRIDWATCH_IMAGE = "gridwatch:latest"
_VAR = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[?-])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


class InterpolationError(ValueError):
    """A required variable (`${VAR:?message}`) is unset, as `docker compose config` would report it."""


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Substitute compose variables in one string (compose spec, "Interpolation")."""

    def sub(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        name = match.group(2) or match.group(5)
        op, arg = match.group(3), match.group(4) or ""
        value = variables.get(name)
        empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":?", "?") and empty:
            raise InterpolationError(f"required variable {name} is missing: {arg}")
        if op in (":-", "-") and empty:
            return interpolate(arg, variables)
        return value or ""

    return _VAR.sub(sub, text)


def _walk(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, variables)
    if isinstance(value, list):
        return [_walk(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, variables) for k, v in value.items()}
    return value


def load(variables: Mapping[str, str] | None = None, path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file with anchors and merge keys resolved; interpolated when variables are given."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise TypeError(f"{path} is not a mapping")
    return _walk(data, variables) if variables is not None else data


def gridwatch_services(data: dict[str, Any], *, profiles: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """The services that run the gridwatch image (those under a profile only when the profile is asked for)."""
    return {
        name: svc
        for name, svc in data["services"].items()
        if svc.get("image") == GRIDWATCH_IMAGE and set(svc.get("profiles", [])) <= set(profiles)
    }


def start_order(services: dict[str, dict[str, Any]]) -> list[str]:
    """Service names so that each comes after everything in its depends_on (among those given)."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise ValueError(f"depends_on cycle: {' -> '.join((*path, name))}")
        for dep in services[name].get("depends_on", {}):
            if dep in services:
                visit(dep, (*path, name))
        order.append(name)

    for name in services:
        visit(name, ())
    return order


def command_of(service: dict[str, Any], image_entrypoint: list[str]) -> list[str]:
    """The argv the container runs: the image's ENTRYPOINT followed by the service's command."""
    command = service.get("command", [])
    return [*image_entrypoint, *(shlex.split(command) if isinstance(command, str) else command)]


def dockerfile_entrypoint(path: Path = ROOT / "Dockerfile") -> list[str]:
    """The exec-form ENTRYPOINT of the image (the last one in the file)."""
    found = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", path.read_text(encoding="utf-8"), re.MULTILINE)
    if not found:
        raise ValueError("the Dockerfile has no exec-form ENTRYPOINT")
    entry = yaml.safe_load(found[-1])
    return [str(x) for x in entry]


@dataclass
class Network:
    """Where each compose hostname:port is reachable from this machine (the test's private servers)."""

    hosts: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    databases: dict[str, str] = field(default_factory=dict)  # compose database name -> this run's

    def url(self, value: str) -> str:
        """A URL with a compose service's host:port (and database) replaced by where it runs here."""
        parts = urlsplit(value)
        if not parts.hostname or not parts.scheme:
            return value
        port = parts.port or {"postgresql": 5432, "mqtt": 1883, "mqtts": 8883, "http": 80}.get(parts.scheme, 0)
        target = self.hosts.get((parts.hostname, port))
        if target is None:
            return value
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{target[0]}:{target[1]}" if userinfo else f"{target[0]}:{target[1]}"
        path = parts.path
        if parts.scheme.startswith("postgres"):
            path = "/" + self.databases.get(path.lstrip("/"), path.lstrip("/"))
        return urlunsplit(parts._replace(netloc=netloc, path=path))


def service_environment(service: dict[str, Any], network: Network) -> tuple[dict[str, str], dict[int, int]]:
    """A service's environment as the process sees it here, and its port map (container port -> host port).

    URLs to other services go through the network map; every `*_PORT` the service listens on gets a free port
    (two containers may both listen on 9100; two processes on one host may not)."""
    env: dict[str, str] = {}
    ports: dict[int, int] = {}
    for key, raw in (service.get("environment") or {}).items():
        value = "" if raw is None else str(raw)
        if key.endswith("_PORT") and value.isdigit():
            ports.setdefault(int(value), free_port())
            value = str(ports[int(value)])
        elif "://" in value:
            value = network.url(value)
        env[key] = value
    return env, ports


def volume_map(service: dict[str, Any], named: Mapping[str, Path], binds: Mapping[str, Path]) -> dict[str, Path]:
    """container path -> host path for a service's volumes: named volumes from `named`, bind mounts with their
    source looked up in `binds` (a repository path -> the folder standing in for it in this run)."""
    found: dict[str, Path] = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith("."):
            found[target] = binds.get(source, ROOT / source)
        else:
            found[target] = named[source]
    return found


def rewrite_paths(text: str, mounts: Mapping[str, Path]) -> str:
    """Replace container paths in a config file or a shell line by the host paths they are mounted from (longest
    first)."""
    for target in sorted(mounts, key=len, reverse=True):
        text = re.sub(re.escape(target.rstrip("/")) + r"""(?=[/\s"')]|$)""", str(mounts[target]).rstrip("/"), text)
    return text


def rewrite_listeners(text: str) -> tuple[str, dict[int, int]]:
    """Every Mosquitto `listener PORT [ADDRESS]` on a free local port; returns the text and the port map."""
    ports: dict[int, int] = {}

    def sub(match: re.Match[str]) -> str:
        port = int(match.group(1))
        ports[port] = free_port()
        return f"listener {ports[port]} 127.0.0.1"

    return re.sub(r"^listener\s+(\d+)(?:[ \t]+\S+)?[ \t]*$", sub, text, flags=re.MULTILINE), ports


def healthcheck_argv(service: dict[str, Any]) -> list[str] | None:
    """The service's health check as an argv (CMD form) or a shell line (CMD-SHELL), None when it has none."""
    check = service.get("healthcheck")
    if not check or check.get("disable"):
        return None
    test = check["test"]
    if isinstance(test, str):
        return ["sh", "-c", test]
    if test[0] == "CMD":
        return [str(x) for x in test[1:]]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", str(test[1])]
    return None
