"""Mosquitto credentials from the registry: a password file, an ACL and the plaintext list to provision devices.

DESIGN: the topic's device id is the identity, so each device's account may publish only its own
`{prefix}/{id}/telemetry|status|cmd/ack` and read its own `cmd`; a device that tries to speak for another is refused
by the broker (and never reaches the ingest). The shipped broker config binds client ids to accounts
(`use_username_as_clientid`), so every process that connects needs an account of its own. Accounts:
  - one per native device, pinned to its own topics (a gateway also to its children's);
  - one per Shelly / Tasmota / ESPHome device (each connects on its own), pinned to its own foreign topics
    (an ESPHome node to `<esphome base>/<node>/#`: its status, entity states and the commands it takes);
  - one Zigbee2MQTT bridge account for `<zigbee2mqtt base>/#` (the bridge speaks for all its devices);
  - the ingest's own account (reads what it subscribes to, writes nothing), and on request more of them
    (`--extra-ingest`), one per further ingest process on a shared subscription;
  - the rules part's account (its command publisher writes the command topics, reads nothing);
  - on request (`--simulator`), the simulators' account for a staging broker (docker-compose's `sim` profile);
  - `healthcheck`, which may read `$SYS/broker/uptime` only (docker-compose's broker health probe). Its password is
    generated like every other and also written to `healthcheck.pw`, which compose mounts for the probe.

Passwords are kept across runs (read back from credentials.csv) unless rotated, so regenerating after a
registry change does not re-key every device in the field. The password file holds PBKDF2-SHA512 hashes in
Mosquitto 2.0's `$7$` format (what `mosquitto_passwd` writes).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.domain import Adapter, DeviceKind
from core.errors import ConfigError
from core.registry import DeviceIn, RegistryIn

PBKDF2_ITERATIONS = 101  # mosquitto_passwd 2.0's default for $7$
SALT_BYTES = 12
INGEST_USER = "ingest"
RULES_USER = "rules"
HEALTHCHECK_USER = "healthcheck"
# What releases before issue 23 gave the health probe: a known password is refused from credentials.csv and
# replaced by a generated one.
LEGACY_HEALTHCHECK_PASSWORD = "healthcheck"  # noqa: S105 - the value refused, not a secret
HEALTHCHECK_FILE = "healthcheck.pw"
ZIGBEE2MQTT_USER = "bridge-zigbee2mqtt"
SIMULATOR_USER = "simulator"

# Usernames end up as `user:hash` lines and `user NAME` ACL lines; topic parts may not hold wildcards.
_SAFE_USER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SAFE_TOPIC_PART = re.compile(r"^[^\s+#/\x00]{1,128}$")


@dataclass(frozen=True, slots=True)
class Account:
    """One broker login and what it may do: (access, topic) with access read | write | readwrite."""

    username: str
    password: str
    kind: str  # device | bridge | ingest | rules | simulator | healthcheck
    acl: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    note: str = ""


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A Mosquitto 2.0 password-file hash ($7$ = PBKDF2-SHA512)."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether a password matches a $7$ hash (used by tests and `--check`)."""
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    again = hash_password(password, salt=base64.b64decode(salt), iterations=int(iterations))
    return secrets.compare_digest(again.rsplit("$", 1)[1], digest)


def new_password() -> str:
    """24 URL-safe characters (~143 bits), typeable into a device's web page."""
    return secrets.token_urlsafe(18)


def _join(root: str, *parts: str) -> str:
    return "/".join(p for p in (root.strip("/"), *parts) if p)


def _check_user(name: str, what: str) -> str:
    if not _SAFE_USER.match(name):
        raise ConfigError(f"{what} {name!r} cannot be a broker username (letters, digits, . _ - only; no ':')")
    return name


def _check_part(value: str, what: str) -> str:
    if not _SAFE_TOPIC_PART.match(value):
        raise ConfigError(f"{what} {value!r} cannot be pinned in the ACL (no spaces, '/', '+' or '#')")
    return value


# Shelly, Tasmota and ESPHome devices connect on their own: each account is pinned to its device's topics under the
# bridge root ({fid}: the device's foreign id; {esphome}: the ESPHome base topic, which may be empty).
_FOREIGN_ACLS: dict[Adapter, tuple[tuple[str, tuple[str, ...]], ...]] = {
    Adapter.SHELLY: (("readwrite", ("shellies", "{fid}", "#")), ("read", ("shellies", "command"))),
    Adapter.TASMOTA: (
        ("write", ("tele", "{fid}", "#")),
        ("write", ("stat", "{fid}", "#")),
        ("read", ("cmnd", "{fid}", "#")),
        ("read", ("cmnd", "tasmotas", "#")),
    ),
    Adapter.ESPHOME: (("readwrite", ("{esphome}", "{fid}", "#")),),
}


def _list_gateway_children(registry: RegistryIn) -> dict[str, list[str]]:
    """Gateway id -> the ids of the devices that speak through it."""
    children: dict[str, list[str]] = {}
    for d in registry.devices:
        if d.gateway:
            children.setdefault(d.gateway, []).append(d.id)
    return children


# The v1 contract's topics of one native device (DESIGN.md, MQTT contract): exactly these and no others, so an
# account cannot fill the broker's retained store or the reject table with topics of its own invention.
_NATIVE_ACL = (("write", "telemetry"), ("write", "status"), ("write", "cmd/ack"), ("read", "cmd"))


def _native_grants(prefix: str, device_id: str) -> list[tuple[str, str]]:
    return [(access, f"{prefix}/{device_id}/{channel}") for access, channel in _NATIVE_ACL]


def _build_native_acl(device: DeviceIn, prefix: str, children: dict[str, list[str]]) -> tuple[tuple[str, str], ...]:
    """A native device's grant: its own topics (a gateway's also its children's)."""
    acl = _native_grants(prefix, device.id)
    if device.kind is DeviceKind.GATEWAY:  # a gateway relays its children's messages under their ids
        for child in children.get(device.id, []):
            acl += _native_grants(prefix, _check_user(child, "device id"))
    return tuple(acl)


# The command topics the rules part's publisher writes (ingest.adapters.encode_command), per dialect; {fid} is a
# device's foreign id. Zigbee2MQTT names may hold '/', so its devices are granted one by one (see _rules_acl).
_COMMAND_TOPICS: dict[Adapter, tuple[str, ...]] = {
    Adapter.SHELLY: ("shellies/+/valve/0/command", "shellies/+/sensor/start_self_test", "shellies/+/sensor/mute"),
    Adapter.TASMOTA: ("cmnd/+/POWER",),
}


def _esphome_reads(registry: RegistryIn, bridge_root: str, esphome_base: str) -> tuple[tuple[str, str], ...]:
    """What the ingest reads of ESPHome nodes: their base, or (nodes at the top level) exactly the registered ones."""
    if esphome_base:
        return (("read", _join(bridge_root, esphome_base, "#")),)
    return tuple(
        ("read", _join(bridge_root, str(d.foreign_id), "#")) for d in registry.devices if d.adapter is Adapter.ESPHOME
    )


def _rules_acl(
    registry: RegistryIn,
    prefix: str,
    bridge_root: str,
    zigbee2mqtt_base: str = "zigbee2mqtt",
    esphome_base: str = "esphome",
) -> tuple[tuple[str, str], ...]:
    """The rules part's grant: write every command topic of the registry's devices, read nothing."""
    acl = [("write", f"{prefix}/+/cmd")]
    adapters = {d.adapter for d in registry.devices}
    for adapter, topics in _COMMAND_TOPICS.items():
        if adapter in adapters:
            acl += [("write", _join(bridge_root, t)) for t in topics]
    for d in registry.devices:
        if d.adapter is Adapter.ZIGBEE2MQTT and d.foreign_id:
            name = str(d.foreign_id)
            if any(c in name for c in "+#\x00") or not name.strip("/"):
                raise ConfigError(f"device {d.id}: zigbee2mqtt foreign_id {name!r} cannot be pinned in the ACL")
            acl.append(("write", _join(bridge_root, zigbee2mqtt_base, name, "set")))
        if d.adapter is Adapter.ESPHOME and d.foreign_id:  # switch and button commands of this node
            acl.append(
                (
                    "write",
                    _join(
                        bridge_root, esphome_base, _check_part(str(d.foreign_id), "esphome node"), "+", "+", "command"
                    ),
                )
            )
    return tuple(acl)


def _build_foreign_acl(
    device: DeviceIn, bridge_root: str, esphome_base: str = "esphome"
) -> tuple[tuple[tuple[str, str], ...], str]:
    """A Shelly, Tasmota or ESPHome device's grant, pinned to its foreign id, and the account's note."""
    adapter = device.adapter.value
    fid = _check_part(str(device.foreign_id), f"device {device.id}: {adapter} foreign_id")
    acl = tuple(
        (access, _join(bridge_root, *(p.format(fid=fid, esphome=esphome_base) for p in parts)))
        for access, parts in _FOREIGN_ACLS[device.adapter]
    )
    return acl, f"{adapter} {fid}"


def _service_accounts(
    registry: RegistryIn,
    password: Callable[[str], str],
    *,
    prefix: str,
    bridge_root: str,
    zigbee2mqtt_base: str,
    esphome_base: str,
    ingest_users: Sequence[str],
    ingest_password: str | None,
    rules_user: str,
    rules_password: str | None,
) -> list[Account]:
    """gridwatch's own accounts: the ingest's (read only; one per ingest process) and the rules part's (commands)."""
    bridges = tuple(("read", _join(bridge_root, t, "#")) for t in (zigbee2mqtt_base, "shellies", "tele", "stat"))
    ingest_acl = (("read", f"{prefix}/#"), *bridges, *_esphome_reads(registry, bridge_root, esphome_base))
    accounts = []
    for i, user in enumerate(ingest_users):
        _check_user(user, "ingest username")
        given = ingest_password if i == 0 else None
        accounts.append(
            Account(
                user,
                given or password(user),
                "ingest",
                ingest_acl,
                "gridwatch ingest (subscribes to devices' messages, publishes nothing)",
            )
        )
    _check_user(rules_user, "rules username")
    accounts.append(
        Account(
            rules_user,
            rules_password or password(rules_user),
            "rules",
            _rules_acl(registry, prefix, bridge_root, zigbee2mqtt_base, esphome_base),
            "gridwatch rules part (its command publisher writes command topics, reads nothing)",
        )
    )
    return accounts


def _healthcheck_password(existing: dict[str, str], rotated: bool) -> str:
    """The probe's password: kept unless rotated or it is the fixed one older releases shipped."""
    kept = existing.get(HEALTHCHECK_USER)
    if rotated or not kept or kept == LEGACY_HEALTHCHECK_PASSWORD:
        return new_password()
    return kept


def build_accounts(
    registry: RegistryIn,
    *,
    prefix: str = "gw/v1",
    bridge_root: str = "",
    zigbee2mqtt_base: str = "zigbee2mqtt",
    esphome_base: str = "esphome",
    existing: dict[str, str] | None = None,
    rotate: Iterable[str] = (),
    rotate_all: bool = False,
    ingest_user: str = INGEST_USER,
    ingest_password: str | None = None,
    extra_ingest_users: Sequence[str] = (),
    rules_user: str = RULES_USER,
    rules_password: str | None = None,
    simulator_password: str | None = None,
) -> list[Account]:
    """Every account the registry needs, keeping existing passwords unless rotated. With simulator_password,
    also the simulators' account (docker-compose's `sim` profile), which may speak for every native device:
    for a staging broker, never for one that real devices use."""
    existing = existing or {}
    rotate = set(rotate)
    ingest_users = [ingest_user, *extra_ingest_users]
    reserved = {*ingest_users, rules_user, ZIGBEE2MQTT_USER, SIMULATOR_USER, HEALTHCHECK_USER}
    unknown = rotate - {d.id for d in registry.devices} - reserved
    if unknown:
        raise ConfigError(f"cannot rotate unknown account(s): {', '.join(sorted(unknown))}")

    def password(user: str) -> str:
        if rotate_all or user in rotate or user not in existing:
            return new_password()
        return existing[user]

    accounts: list[Account] = []
    children = _list_gateway_children(registry)
    zigbee: list[str] = []
    for d in registry.devices:
        user = _check_user(d.id, "device id")
        if d.adapter is Adapter.NATIVE:
            acl = _build_native_acl(d, prefix, children)
            accounts.append(Account(user, password(user), "device", acl, f"{d.kind.value} at {d.site}"))
        elif d.adapter in _FOREIGN_ACLS:
            acl, note = _build_foreign_acl(d, bridge_root, esphome_base)
            accounts.append(Account(user, password(user), "device", acl, note))
        else:
            zigbee.append(d.id)
    if zigbee:
        accounts.append(
            Account(
                ZIGBEE2MQTT_USER,
                password(ZIGBEE2MQTT_USER),
                "bridge",
                (("readwrite", _join(bridge_root, zigbee2mqtt_base, "#")),),
                f"Zigbee2MQTT bridge for {len(zigbee)} device(s)",
            )
        )
    accounts += _service_accounts(
        registry,
        password,
        prefix=prefix,
        bridge_root=bridge_root,
        zigbee2mqtt_base=zigbee2mqtt_base,
        esphome_base=esphome_base,
        ingest_users=ingest_users,
        ingest_password=ingest_password,
        rules_user=rules_user,
        rules_password=rules_password,
    )
    if simulator_password is not None:
        accounts.append(
            Account(
                SIMULATOR_USER,
                simulator_password or password(SIMULATOR_USER),
                "simulator",
                (("readwrite", f"{prefix}/#"),),
                "simulated devices (staging only)",
            )
        )
    accounts.append(
        Account(
            HEALTHCHECK_USER,
            _healthcheck_password(existing, rotate_all or HEALTHCHECK_USER in rotate),
            "healthcheck",
            (("read", "$SYS/broker/uptime"),),
            "broker health probe",
        )
    )
    names = [a.username for a in accounts]
    clash = {n for n in names if names.count(n) > 1}
    if clash:
        raise ConfigError(
            f"account name(s) used twice: {', '.join(sorted(clash))} (a device id equals a reserved name)"
        )
    return accounts


def render_password_file(accounts: Iterable[Account]) -> str:
    """`user:$7$...` lines for Mosquitto's password_file."""
    return "".join(f"{a.username}:{hash_password(a.password)}\n" for a in accounts)


def render_acl(accounts: Iterable[Account]) -> str:
    """Mosquitto's acl_file: every account gets exactly its topics; nothing else is allowed."""
    out = [
        "# Generated by `gridwatch mqtt credentials` from the registry. Do not edit: regenerate.",
        "# Anything not granted here is denied (including to anonymous clients).",
    ]
    for a in accounts:
        out += ["", f"# {a.kind}: {a.note}" if a.note else f"# {a.kind}", f"user {a.username}"]
        out += [f"topic {access} {topic}" for access, topic in a.acl]
    return "\n".join(out) + "\n"


CSV_FIELDS = ("username", "password", "kind", "note")


def read_credentials(path: Path) -> dict[str, str]:
    """username -> password from a previous run's credentials.csv (empty when there is none)."""
    if not path.exists():
        return {}
    with path.open(encoding="utf-8", newline="") as f:
        return {row["username"]: row["password"] for row in csv.DictReader(f)}


def render_credentials(accounts: Iterable[Account]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for a in accounts:
        writer.writerow({"username": a.username, "password": a.password, "kind": a.kind, "note": a.note})
    return buf.getvalue()


def _write_private(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)  # the mode must hold whatever the umask
    tmp.replace(path)


def write_files(out: Path, accounts: list[Account]) -> dict[str, Path]:
    """passwd + acl for the broker, credentials.csv (plaintext, 0600) for provisioning, healthcheck.pw (0600) for
    the broker's health probe; atomically replaced."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "passwd": out / "passwd",
        "acl": out / "acl",
        "credentials": out / "credentials.csv",
        "healthcheck": out / HEALTHCHECK_FILE,
    }
    # Mosquitto (running as its own user) must read passwd and acl; only the operator reads the plaintext. The
    # probe runs as root inside the broker's container (docker's default), which reads the 0600 file.
    _write_private(files["credentials"], render_credentials(accounts), 0o600)
    _write_private(files["passwd"], render_password_file(accounts), 0o644)
    _write_private(files["acl"], render_acl(accounts), 0o644)
    probe = next((a.password for a in accounts if a.username == HEALTHCHECK_USER), "")
    _write_private(files["healthcheck"], probe, 0o600)
    return files
