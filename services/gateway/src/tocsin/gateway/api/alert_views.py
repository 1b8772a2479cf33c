"""What `GET /v1/alerts` shows of each alert: a summary by default, the full record on request.

A list needs to tell alerts apart, order and group them, and say who acted:
`AlertSummary` is that (about half a stored record's bytes; annotations,
producer details and the epoch-second copies of the times stay behind). The
full record is one `fields=full` away, or `GET /v1/alerts/{id}` with its
timeline. `fields=a,b,c` picks stored fields by name (`id` always comes).

Records are read from Redis as the processor stored them (JSON) and turned into
the chosen view here by one typed decode and one encode, which skips the
fields the view leaves out without building them.
"""

from __future__ import annotations

import functools
from typing import Any, Final, Literal

import msgspec

from tocsin.common.errors import InvalidInputError
from tocsin.common.models import Severity, StoredAlert

__all__ = [
    "FIELDS_PARAMETER",
    "FULL",
    "SUMMARY",
    "AlertSummary",
    "AlertView",
    "InvalidFieldsError",
    "parse_fields",
    "render_records",
]

FIELDS_PARAMETER = "fields"
SUMMARY: Final = "summary"
FULL: Final = "full"
# Every field of the stored record, in its declared order.
STORED_FIELDS: tuple[str, ...] = StoredAlert.__struct_fields__


class AlertSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One alert as a list shows it; absent members have their default (null, false, empty)."""

    id: str
    name: str
    severity: Severity
    status: Literal["firing", "acknowledged", "resolved"]
    service: str = ""
    team: str = ""
    summary: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    count: int = 1
    first_seen: str = ""
    last_seen: str = ""
    acknowledged_at: str | None = None
    acknowledged_by: str | None = None
    resolved_at: str | None = None
    resolved_by: str | None = None
    silenced: bool = False
    flapping: bool = False


class InvalidFieldsError(InvalidInputError, ValueError):
    """A `fields` parameter naming something an alert does not have."""


@functools.lru_cache(maxsize=64)
def _picked(names: tuple[str, ...]) -> type[msgspec.Struct]:
    """A struct of the named stored fields (types from `StoredAlert`), made once per choice."""
    types = {field.name: field.type for field in msgspec.structs.fields(StoredAlert)}
    # Every member optional: a field added to the record later is absent from older records.
    return msgspec.defstruct(
        "PickedAlert",
        [(name, types[name] | None, None) for name in names],
        kw_only=True,
        omit_defaults=True,
        module=__name__,
    )


AlertView = tuple[str, ...] | Literal["summary", "full"]


def parse_fields(raw: str | None) -> AlertView:
    """`summary` (the default), `full`, or the sorted stored field names asked for."""
    if raw is None or raw in ("", SUMMARY):
        return SUMMARY
    if raw == FULL:
        return FULL
    names = set(raw.split(","))
    unknown = sorted(repr(name) for name in names - set(STORED_FIELDS))
    if unknown:
        raise InvalidFieldsError(
            f"fields: unknown field(s) {', '.join(unknown)}; expected summary, full, "
            f"or names among {', '.join(STORED_FIELDS)}"
        )
    return tuple(name for name in STORED_FIELDS if name in names | {"id"})


_summaries = msgspec.json.Decoder(list[AlertSummary])
_encoder = msgspec.json.Encoder()


def render_records(joined: bytes, view: AlertView) -> bytes:
    """The records of a page (stored JSON joined by ','), as the members of the view's array."""
    if view == FULL or not joined:
        return joined
    document = b"[" + joined + b"]"
    chosen: list[Any]
    if view == SUMMARY:
        chosen = _summaries.decode(document)
        for summary in chosen:
            summary.team = summary.labels.get("team", "")
    else:
        chosen = msgspec.json.decode(document, type=list[_picked(view)])  # type: ignore[misc]
    return _encoder.encode(chosen)[1:-1]
