"""Signed action links: what a message carries so that its recipient can open that one item — an alarm, a resident
report, a drill or a work order — on a phone and act on it without a token.

The part that sends a message (notify for alarms, field for its notices) signs a link for each (item, recipient)
when it sends it; the API verifies it. The link is not stored anywhere (the stored message keeps the plain
address), so a database reader cannot use it. Its key is

    <w|m>~<recipient id>~<issued at, base 36 epoch seconds>~<signature>

and the signature is an HMAC-SHA256, keyed with GRIDWATCH_SECRET_KEY, over the kind of item (the subject), its id,
the recipient and the issue time: changing any of them, presenting the key under another item's URL, or under an
item of another kind with the same id (an alarm's key on report 7), breaks it. It expires `ttl` after it was
issued (GRIDWATCH_LINK_TTL_H); the API also refuses links of deactivated recipients and links issued before a
recipient's links were revoked. An alarm's signed message is the one alarm links always had, so links sent before
the other subjects existed still work.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from core.errors import GridwatchError

RecipientKind = Literal["worker", "merchant"]
Subject = Literal["alarm", "resident_report", "drill", "work_order"]
_KIND_CODE: dict[str, RecipientKind] = {"w": "worker", "m": "merchant"}
_CODE_OF: dict[RecipientKind, str] = {"worker": "w", "merchant": "m"}
# Where each subject's link lives (PUBLIC_URL/<path>/<id>/link/<key>), and what a person calls it.
PATHS: dict[Subject, str] = {
    "alarm": "alarms",
    "resident_report": "resident-reports",
    "drill": "drills",
    "work_order": "work-orders",
}
NOUNS: dict[Subject, str] = {
    "alarm": "alarm",
    "resident_report": "resident report",
    "drill": "drill",
    "work_order": "work order",
}
SIGNATURE_CHARS = 32  # 192 bits of the HMAC, base64url
KEY_RE = re.compile(
    r"^(?P<kind>[wm])~(?P<id>[A-Za-z0-9][A-Za-z0-9._:-]{0,63})~(?P<iat>[0-9a-z]{1,10})~(?P<sig>[A-Za-z0-9_-]+)$"
)
# Clocks of the sending and API processes may differ a little; a link "issued" later than this is forged.
CLOCK_SLACK = timedelta(seconds=60)


class LinkError(GridwatchError):
    """A link that is not valid (tampered, for another item, expired, revoked); the message says which."""


@dataclass(frozen=True, slots=True)
class LinkClaim:
    """Who a verified link was sent to, about which item, and when."""

    subject: Subject
    subject_id: int
    recipient_kind: RecipientKind
    recipient_id: str
    issued_at: datetime


def _b36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, r = divmod(value, 36)
        out = digits[r] + out
        if value == 0:
            return out


def _signature(secret_key: str, subject: Subject, subject_id: int, code: str, recipient_id: str, iat: str) -> str:
    # The subject is the message's first field ("gridwatch-alarm-link", "gridwatch-drill-link", ...): the fields are
    # NUL-separated and no field holds a NUL, so no two (subject, id, recipient, time) sign the same bytes.
    if subject not in PATHS:
        raise ValueError(f"unknown link subject {subject!r}")
    message = f"gridwatch-{subject}-link\x00{subject_id}\x00{code}\x00{recipient_id}\x00{iat}".encode()
    digest = hmac.new(secret_key.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:SIGNATURE_CHARS]


def sign(
    secret_key: str,
    *,
    subject: Subject,
    subject_id: int,
    kind: RecipientKind,
    recipient_id: str,
    issued_at: datetime,
) -> str:
    """The key of a link to one item for one recipient."""
    code = _CODE_OF[kind]
    iat = _b36(int(issued_at.timestamp()))
    return f"{code}~{recipient_id}~{iat}~{_signature(secret_key, subject, subject_id, code, recipient_id, iat)}"


def url(public_url: str, subject: Subject, subject_id: int, key: str) -> str:
    """The link itself (public_url is GRIDWATCH_PUBLIC_URL)."""
    return f"{public_url.rstrip('/')}/{PATHS[subject]}/{subject_id}/link/{key}"


def verify(secret_key: str, *, subject: Subject, subject_id: int, key: str, now: datetime, ttl: timedelta) -> LinkClaim:
    """The claim of a key presented under /<subject's path>/{subject_id}/link/; LinkError if it is not a valid one
    now."""
    noun = NOUNS[subject]
    match = KEY_RE.fullmatch(key)
    if match is None:
        raise LinkError("this link is not valid: it was cut short or changed; open the message again")
    code, recipient_id, iat = match["kind"], match["id"], match["iat"]
    expected = _signature(secret_key, subject, subject_id, code, recipient_id, iat)
    if not hmac.compare_digest(expected, match["sig"]):
        # A key signed for another item fails here too: the subject and its id are part of what is signed.
        raise LinkError(f"this link is not valid for this {noun}: open the link in the message you received")
    issued = datetime.fromtimestamp(int(iat, 36), UTC)
    if issued > now + CLOCK_SLACK:
        raise LinkError("this link is not valid: it was issued in the future")
    if now >= issued + ttl:
        raise LinkError(f"this link has expired: open the latest message about the {noun}, or log in and find it there")
    return LinkClaim(subject, subject_id, _KIND_CODE[code], recipient_id, issued)


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs the links of one deployment (notify and field hold one; the API verifies with the same secret key)."""

    secret_key: str
    public_url: str

    def url_for(
        self, *, subject: Subject, subject_id: int, kind: RecipientKind, recipient_id: str, now: datetime
    ) -> str:
        """A fresh link to one item for one recipient."""
        key = sign(
            self.secret_key, subject=subject, subject_id=subject_id, kind=kind, recipient_id=recipient_id, issued_at=now
        )
        return url(self.public_url, subject, subject_id, key)
