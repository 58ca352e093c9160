"""Segment's Python library, unmodified, pointed at this server by its host
(gzip on). Run by tests/segment.rs; exits non-zero on any delivery error."""

import os
import sys

import segment.analytics as analytics

errors = []
analytics.write_key = os.environ["WRITE_KEY"]
analytics.host = os.environ["HOST"]
analytics.gzip = True
analytics.on_error = lambda error, batch: errors.append(str(error))

analytics.track(user_id="user-py", event="Ticket Scanned", properties={"event_id": "evt-py", "gate": "B"})
analytics.page(user_id="user-py", name="Event Page", properties={"url": "https://tickets.example/py"})
analytics.identify(user_id="user-py", traits={"plan": "free"})
analytics.flush()
analytics.shutdown()
if errors:
    print(errors)
    sys.exit(1)
print("segment-python: ok")
