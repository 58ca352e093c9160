"""{{name}}: a Bilten Analytics plugin in Python.
`bilten-analytics plugin build .` makes {{name}}.wasm."""

from bilten_plugin import Event, Verdict, drop, keep

NAME = "{{name}}"
VERSION = "0.1.0"


def check(event: Event, config: dict) -> Verdict:
    """Called once per event: keep(), drop(), reject(code, field, message) or
    modify(event). `config` is the plugin's table from the server's
    `[[plugins]]` entry."""
    # Events marked as tests never reach the tables.
    if event.event_type == "test_event":
        return drop()
    return keep()
