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
await w.command({
  query:
    'CREATE TABLE IF NOT EXISTS js_rows (id UInt32, name String, tags Array(String)) ' +
    'ENGINE = MergeTree ORDER BY id',
})
await w.insert({
  table: 'js_rows',
  values: [
    { id: 1, name: 'première', tags: ['a', 'b'] },
    { id: 2, name: 'b', tags: [] },
  ],
  format: 'JSONEachRow',
})
const rs = await w.query({
  query: 'SELECT id, name, tags FROM js_rows WHERE id >= {min:UInt32} ORDER BY id',
  query_params: { min: 1 },
  format: 'JSONEachRow',
})
assert.deepEqual(await rs.json(), [
  { id: 1, name: 'première', tags: ['a', 'b'] },
  { id: 2, name: 'b', tags: [] },
])
assert.equal((await w.ping()).success, true)

const r = client('reader', process.env.CH_READER_PASSWORD)
const counted = await (await r.query({ query: 'SELECT count() AS n FROM js_rows', format: 'JSON' })).json()
assert.equal(Number(counted.data[0].n), 2)
await refused(() => r.insert({ table: 'js_rows', values: [{ id: 3, name: 'c', tags: [] }], format: 'JSONEachRow' }), 'READONLY')
await refused(() => r.query({ query: "SELECT * FROM url('http://127.0.0.1:1/')" }), 'ACCESS_DENIED')
await refused(() => client('reader', 'wrong').query({ query: 'SELECT 1' }), 'AUTHENTICATION_FAILED')
await Promise.all([w.close(), r.close()])
console.log('@clickhouse/client: ok')
