"""clickhouse-connect, unmodified, against the embedded engine's ClickHouse
HTTP interface. Run by tests/clickhouse_http.rs; exits non-zero on failure."""
import datetime
import decimal
import os
import sys

import clickhouse_connect
from clickhouse_connect.driver.exceptions import DatabaseError

host, port = os.environ["CH_HOST"], int(os.environ["CH_PORT"])


def client(user, password):
    # The defaults: LZ4 request bodies, compressed answers, a session id.
    return clickhouse_connect.get_client(
        host=host, port=port, username=user, password=password, database="bilten_analytics"
    )


def refused(run, code_name):
    try:
        run()
    except DatabaseError as e:
        assert code_name in str(e), f"expected {code_name}, got {e}"
        return
    raise AssertionError(f"expected a refusal with {code_name}")


w = client("writer", os.environ["CH_WRITER_PASSWORD"])
# A writer inserts rows into the project's tables (an app loading its
# ticket sales, here); it creates no tables of its own.
refused(lambda: w.command("CREATE TABLE IF NOT EXISTS cc_rows (id UInt32) ENGINE = MergeTree ORDER BY id"),
        "ACCESS_DENIED")
at = datetime.datetime(2026, 11, 29, 12, 30, 1, 250000)
w.insert(
    "ticket_sales",
    [["cc-1", "première", at, decimal.Decimal("9.50")], ["cc-2", "b", at, decimal.Decimal("120.00")]],
    column_names=["order_id", "event_id", "timestamp", "price"],
)
rows = w.query(
    "SELECT order_id, event_id, timestamp, price FROM ticket_sales "
    "WHERE order_id LIKE 'cc-%' AND quantity >= {min:UInt32} ORDER BY order_id",
    parameters={"min": 0},
).result_rows
assert [(r[0], r[1], r[2].replace(tzinfo=None), r[3]) for r in rows] == [
    ("cc-1", "première", at, decimal.Decimal("9.50")),
    ("cc-2", "b", at, decimal.Decimal("120.00")),
], rows
# The seed's tables are there, and a DataFrame-free query of them works.
assert w.query("SELECT count() FROM events").result_rows[0][0] == int(os.environ["CH_EVENTS"])

r = client("reader", os.environ["CH_READER_PASSWORD"])
assert r.query("SELECT sum(price) FROM ticket_sales WHERE order_id LIKE 'cc-%'").result_rows[0][0] == decimal.Decimal("129.50")
assert r.command("SELECT version()").startswith("26.")
refused(lambda: r.insert("ticket_sales", [["cc-3"]], column_names=["order_id"]), "READONLY")
refused(lambda: r.query("SELECT file('/etc/passwd')"), "ACCESS_DENIED")
refused(lambda: w.command("INSERT INTO ticket_sales (order_id) SELECT * FROM file('/etc/passwd', 'LineAsString')"),
        "ACCESS_DENIED")
refused(lambda: client("reader", "wrong").query("SELECT 1"), "AUTHENTICATION_FAILED")
print("clickhouse-connect: ok")
