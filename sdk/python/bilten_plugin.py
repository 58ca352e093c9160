"""Bilten Analytics plugins in Python: the same contract as the Rust SDK
(`bilten:plugin@1.0.0`, sdk/wit/plugin.wit), in Python's idiom.

A plugin is a module with NAME, VERSION and

    def check(event: Event, config: dict) -> Verdict:
        return keep()

returning keep(), drop(), reject(code, field, message) or modify(event); an
optional init(config) runs once per batch before the first check.
`bilten-analytics plugin build` turns it into a WebAssembly component. This
module has no dependencies, so a plugin's unit tests run in plain Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Union


# @generated begin event
@dataclass
class Event:
    """One event, as `check` reads it. Fields a table does not have are empty or zero."""

    id: str = ""  # The event's id (a UUID); sent again, the event is stored once. Made by the server when absent.
    table: str = "events"  # events, page_views, ticket_sales
    timestamp_ms: int = 0  # Milliseconds since the Unix epoch, UTC.
    event_type: str = ""  # What happened: `page_view`, `add_to_cart`, `purchase`, … Only `events`; elsewhere `page-views`: "page_view", `ticket-sales`: "ticket_sale".
    event_name: str = ""  # A name for it, shown in reports. Only `events`; elsewhere empty.
    organizer_id: str = ""  # The organizer the event belongs to.
    user_id: str = ""  # Who did it.
    session_id: str = ""  # The visit it belongs to. Only `events`, `page-views`; elsewhere empty.
    event_id: str = ""  # The ticketed event (concert, show) it concerns.
    properties: dict = field(default_factory=dict)  # A JSON object of anything else (at most 64 KiB). Only `events`; elsewhere `{}`.
    user_agent: str = ""  # The browser's User-Agent. Only `events`, `page-views`; elsewhere empty.
    ip: str = ""  # The client's address (truncated by the privacy plugin). Only `events`, `page-views`; elsewhere empty.
    url: str = ""  # The page's URL. Only `page-views`; elsewhere empty.
    referrer: str = ""  # The page the visitor came from. Only `page-views`; elsewhere empty.
    duration_ms: int = 0  # Time on the page, in milliseconds. Only `page-views`; elsewhere zero.
    order_id: str = ""  # The order the tickets were bought in. Only `ticket-sales`; elsewhere empty.
    quantity: int = 0  # Tickets sold. Only `ticket-sales`; elsewhere zero.
    price_cents: int = 0  # Hundredths of the currency unit: 12.50 is 1250. Only `ticket-sales`; elsewhere zero.
    currency: str = ""  # ISO 4217 code, e.g. EUR. Only `ticket-sales`; elsewhere empty.
# @generated end event


@dataclass(frozen=True)
class Keep:
    pass


@dataclass(frozen=True)
class Drop:
    pass


@dataclass(frozen=True)
class Reject:
    code: str
    field: Optional[str]
    message: str


@dataclass(frozen=True)
class Modify:
    event: Event


Verdict = Union[Keep, Drop, Reject, Modify]


def keep() -> Verdict:
    """Store the event as it is."""
    return Keep()


def drop() -> Verdict:
    """Discard it; the server counts it."""
    return Drop()


def reject(code: str, field: Optional[str], message: str) -> Verdict:
    """Refuse it: the client sees the code, the field and the message."""
    return Reject(str(code), None if field is None else str(field), str(message))


def modify(event: Event) -> Verdict:
    """Store this event instead: same id and organizer, validated again."""
    return Modify(event)


# @generated begin fields
# The text fields in the batch's layout (the contract's `text-field` order).
_TEXT = ("id", "event_type", "event_name", "organizer_id", "user_id", "session_id", "event_id", "properties", "user_agent", "ip", "url", "referrer", "order_id", "currency",)
_TABLES = ("events", "page_views", "ticket_sales",)
# Each number's member and batch column.
_NUMBER_COLUMNS = {
    "timestamp_ms": "timestamps_ms",
    "duration_ms": "durations_ms",
    "quantity": "quantities",
    "price_cents": "prices_cents",
}
# @generated end fields


_NUMBERS = {"table": lambda b, i: _TABLES[b.tables[i]]}
for _member, _column in _NUMBER_COLUMNS.items():
    _NUMBERS[_member] = (lambda c: lambda b, i: getattr(b, c)[i])(_column)
_FIELD = {name: f for f, name in enumerate(_TEXT)}


class _BatchEvent(Event):
    """An event of a batch whose fields are decoded when first read (most
    plugins read two or three), then kept. It is an `Event`:
    `dataclasses.replace` and `modify` read every field, so nothing is lost."""

    @classmethod
    def at(cls, batch: Any, i: int) -> "_BatchEvent":
        """Event `i` of `batch`, nothing decoded yet. (Not `__init__`: that
        stays the dataclass's, which `dataclasses.replace` calls.)"""
        e = cls.__new__(cls)
        object.__setattr__(e, "_src", (batch, i))
        return e

    def __getattribute__(self, name: str) -> Any:
        # The dataclass keeps each field's default on the class: a field not
        # decoded yet must not read as that default.
        d = object.__getattribute__(self, "__dict__")
        if name in d or (name not in _FIELD and name not in _NUMBERS):
            return object.__getattribute__(self, name)
        batch, i = d["_src"]
        f = _FIELD.get(name)
        if f is not None:
            b = len(_TEXT) * i + f
            value: Any = batch.text[batch.offsets[b]:batch.offsets[b + 1]]
            if name == "properties":
                value = json.loads(value or "{}")
        else:
            value = _NUMBERS[name](batch, i)
        d[name] = value
        return value


def events_of(batch: Any) -> Iterator[Event]:
    """The events of a batch as the host lays it out, one by one."""
    for i in range(len(batch.tables)):
        yield _BatchEvent.at(batch, i)


def to_wit(types: Any, verdict: Optional[Verdict]) -> Any:
    """A verdict as the contract's type (`types`: the generated bindings)."""
    if verdict is None or isinstance(verdict, Keep):
        return types.Verdict_Keep()
    if isinstance(verdict, Drop):
        return types.Verdict_Drop()
    if isinstance(verdict, Reject):
        return types.Verdict_Reject(types.Rejection(code=verdict.code, message=verdict.message, field=verdict.field))
    if isinstance(verdict, Modify):
        e = verdict.event
        fields = {name: getattr(e, name) for name in _TEXT}
        props = e.properties
        # An object (`properties`) crosses as its JSON text.
        fields["properties"] = props if isinstance(props, str) else json.dumps(props, separators=(",", ":"))
        for member in _NUMBER_COLUMNS:
            fields[member] = int(getattr(e, member))
        table = getattr(types.Table, e.table.upper())
        return types.Verdict_Modify(types.Event(table=table, **fields))
    raise TypeError(f"check returned {verdict!r}: return keep(), drop(), reject(...) or modify(event)")
