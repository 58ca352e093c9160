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


@dataclass
class Event:
    """One event, as `check` reads it. Fields a table does not have are empty or zero."""

    id: str = ""
    table: str = "events"  # events, page_views or ticket_sales
    timestamp_ms: int = 0
    event_type: str = ""
    event_name: str = ""
    organizer_id: str = ""
    user_id: str = ""
    session_id: str = ""
    event_id: str = ""
    properties: dict = field(default_factory=dict)
    user_agent: str = ""
    ip: str = ""
    url: str = ""
    referrer: str = ""
    duration_ms: int = 0
    order_id: str = ""
    quantity: int = 0
    price_cents: int = 0  # hundredths of the currency unit: 12.50 is 1250
    currency: str = ""


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


# The text fields in the batch's layout (the contract's `text-field` order).
_TEXT = ("id", "event_type", "event_name", "organizer_id", "user_id", "session_id", "event_id",
         "properties", "user_agent", "ip", "url", "referrer", "order_id", "currency")
_TABLES = ("events", "page_views", "ticket_sales")


_NUMBERS = {
    "table": lambda b, i: _TABLES[b.tables[i]],
    "timestamp_ms": lambda b, i: b.timestamps_ms[i],
    "duration_ms": lambda b, i: b.durations_ms[i],
    "quantity": lambda b, i: b.quantities[i],
    "price_cents": lambda b, i: b.prices_cents[i],
}
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
        table = {"events": types.Table.EVENTS, "page_views": types.Table.PAGE_VIEWS,
                 "ticket_sales": types.Table.TICKET_SALES}[e.table]
        props = e.properties if isinstance(e.properties, str) else json.dumps(e.properties, separators=(",", ":"))
        return types.Verdict_Modify(types.Event(
            id=e.id, table=table, timestamp_ms=int(e.timestamp_ms), event_type=e.event_type,
            event_name=e.event_name, organizer_id=e.organizer_id, user_id=e.user_id,
            session_id=e.session_id, event_id=e.event_id, properties=props, user_agent=e.user_agent,
            ip=e.ip, url=e.url, referrer=e.referrer, duration_ms=int(e.duration_ms),
            order_id=e.order_id, quantity=int(e.quantity), price_cents=int(e.price_cents),
            currency=e.currency))
    raise TypeError(f"check returned {verdict!r}: return keep(), drop(), reject(...) or modify(event)")
