// @clickhouse/client, unmodified, against the embedded engine's ClickHouse
// HTTP interface. Run by tests/clickhouse_http.rs; exits non-zero on failure.
import assert from 'node:assert/strict'
import { createClient } from '@clickhouse/client'

const url = process.env.CH_URL
const client = (username, password) =>
  createClient({
    url,
    username,
    password,
    database: 'bilten_analytics',
    // gzip both ways: Content-Encoding on requests, enable_http_compression on answers.
    compression: { request: true, response: true },
  })

async function refused(run, codeName) {
  await assert.rejects(run, (e) => {
    assert.match(String(e.message) + ' ' + String(e.type), new RegExp(codeName))
    return true
  })
}

const w = client('writer', process.env.CH_WRITER_PASSWORD)
// A writer inserts rows into the project's tables; it creates none of its own.
await refused(
  () => w.command({ query: 'CREATE TABLE IF NOT EXISTS js_rows (id UInt32) ENGINE = MergeTree ORDER BY id' }),
  'ACCESS_DENIED',
)
await w.insert({
  table: 'ticket_sales',
  values: [
    { order_id: 'js-1', event_id: 'première', quantity: 2, timestamp: '2026-11-29 12:00:00.000' },
    { order_id: 'js-2', event_id: 'b', quantity: 0, timestamp: '2026-11-29 12:00:00.000' },
  ],
  format: 'JSONEachRow',
})
const rs = await w.query({
  query:
    "SELECT order_id, event_id, quantity FROM ticket_sales WHERE order_id LIKE 'js-%' AND quantity >= {min:UInt32} ORDER BY order_id",
  query_params: { min: 0 },
  format: 'JSONEachRow',
})
assert.deepEqual(await rs.json(), [
  { order_id: 'js-1', event_id: 'première', quantity: 2 },
  { order_id: 'js-2', event_id: 'b', quantity: 0 },
])
assert.equal((await w.ping()).success, true)

const r = client('reader', process.env.CH_READER_PASSWORD)
const counted = await (
  await r.query({ query: "SELECT count() AS n FROM ticket_sales WHERE order_id LIKE 'js-%'", format: 'JSON' })
).json()
assert.equal(Number(counted.data[0].n), 2)
await refused(() => r.insert({ table: 'ticket_sales', values: [{ order_id: 'js-3' }], format: 'JSONEachRow' }), 'READONLY')
await refused(() => r.query({ query: "SELECT * FROM url('http://127.0.0.1:1/')" }), 'ACCESS_DENIED')
await refused(() => client('reader', 'wrong').query({ query: 'SELECT 1' }), 'AUTHENTICATION_FAILED')
await Promise.all([w.close(), r.close()])
console.log('@clickhouse/client: ok')
