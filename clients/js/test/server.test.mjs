// Against the real server: rows land in the tables with the fields sent.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { AnalyticsIngestionService, uuidv7 } from '@bilten/analytics'
import { URL, KEY, hasServer, rows } from './server.mjs'

const skip = hasServer ? false : 'no server: run through server/tests/clients_js.rs'

test('the seed example, verbatim, lands its rows (sent at exit)', { skip }, async () => {
  execFileSync(process.execPath, ['test/seed-example.mjs'], { stdio: 'inherit', env: process.env })
  const events = await rows(
    "SELECT event_type, event_name, user_id, event_id, properties FROM bilten_analytics.events WHERE organizer_id = 'org-123'",
  )
  assert.equal(events.length, 1)
  assert.equal(events[0].event_name, 'Event Details Page')
  assert.equal(events[0].event_id, 'evt-789')
  assert.equal(JSON.parse(events[0].properties).device_type, 'desktop')
  const sales = await rows(
    "SELECT quantity, toString(price) AS price, currency, user_id FROM bilten_analytics.ticket_sales WHERE organizer_id = 'org-123'",
  )
  assert.deepEqual(sales, [{ quantity: 2, price: '50', currency: 'USD', user_id: 'user-456' }])
})

test('2500 events in batches of 1000, gzipped, each stored once', { skip }, async () => {
  const analytics = new AnalyticsIngestionService({ url: URL, apiKey: KEY })
  for (let i = 0; i < 2500; i++) {
    await analytics.trackEvent({ event_type: 'click', organizer_id: 'org-batch', user_id: `u${i}`, properties: { i } })
  }
  // A full batch leaves at once, without waiting for the timer.
  assert.ok(analytics.pending() <= 1500, `pending ${analytics.pending()}`)
  await analytics.close()
  assert.equal(analytics.pending(), 0)
  const [r] = await rows("SELECT count() AS n, uniqExact(id) AS ids, uniqExact(user_id) AS users FROM bilten_analytics.events WHERE organizer_id = 'org-batch'")
  assert.deepEqual([Number(r.n), Number(r.ids), Number(r.users)], [2500, 2500, 2500])
  await assert.rejects(analytics.trackEvent({ event_type: 'late', organizer_id: 'org-batch' }), /closed/)
})

test('a refused event is reported; its valid neighbour is stored', { skip }, async () => {
  const rejected = []
  const analytics = new AnalyticsIngestionService({ url: URL, apiKey: KEY, onRejected: (r) => rejected.push(r) })
  await analytics.trackTicketSale({ event_id: 'evt-1', organizer_id: 'org-rej', quantity: 1, price: '12.50', currency: 'EUR' })
  await analytics.trackTicketSale({ event_id: 'evt-1', organizer_id: 'org-rej', quantity: 1, price: -5, currency: 'EUR' })
  await analytics.trackPageView({ organizer_id: 'org-rej', referrer: 'x' })
  await analytics.close()
  // The tables' answers come in either order.
  rejected.sort((a, b) => a.table.localeCompare(b.table))
  assert.deepEqual(
    rejected.map((r) => [r.table, r.field, r.event.organizer_id]),
    [
      ['page-views', 'url', 'org-rej'],
      ['ticket-sales', 'price', 'org-rej'],
    ],
  )
  assert.match(rejected[1].reason, /price/)
  const sales = await rows("SELECT toString(price) AS price FROM bilten_analytics.ticket_sales WHERE organizer_id = 'org-rej'")
  assert.deepEqual(sales, [{ price: '12.5' }])
})

test('an event sent twice under its id is stored once', { skip }, async () => {
  const id = uuidv7()
  for (let round = 0; round < 2; round++) {
    const analytics = new AnalyticsIngestionService({ url: URL, apiKey: KEY })
    await analytics.trackEvent({ id, event_type: 'resend', organizer_id: 'org-dup' })
    await analytics.close()
  }
  const r = await rows("SELECT toString(id) AS id FROM bilten_analytics.events WHERE organizer_id = 'org-dup'")
  assert.deepEqual(r, [{ id }])
})

test('a wrong key is a 401, not retried, reported', { skip: skip || (KEY ? false : 'no ingest key') }, async () => {
  const errors = []
  const analytics = new AnalyticsIngestionService({ url: URL, apiKey: 'not-the-key', onError: (e) => errors.push(e) })
  await analytics.trackEvent({ event_type: 'x', organizer_id: 'org-401' })
  await assert.rejects(analytics.close(), (e) => e.name === 'DeliveryError' && e.status === 401 && e.retriable === false)
  assert.equal(analytics.pending(), 0)
})

test('the CommonJS build works too', { skip }, async () => {
  const require = createRequire(import.meta.url)
  const { AnalyticsIngestionService: Cjs } = require('@bilten/analytics')
  const analytics = new Cjs({ url: URL, apiKey: KEY })
  await analytics.trackPageView({ url: 'https://tickets.example/e/1', organizer_id: 'org-cjs', duration_ms: 1200 })
  await analytics.close()
  const r = await rows("SELECT url, duration_ms FROM bilten_analytics.page_views WHERE organizer_id = 'org-cjs'")
  assert.deepEqual(r, [{ url: 'https://tickets.example/e/1', duration_ms: 1200 }])
})

test('stats() asks the Stats API with the read key; a refusal names the field', { skip }, async () => {
  const analytics = new AnalyticsIngestionService({ url: URL, apiKey: KEY, readKey: process.env.BILTEN_READ_KEY })
  const at = Date.now() - 60_000
  for (const [i, url] of ['https://t.example/?utm_campaign=launch', 'https://t.example/e/1'].entries()) {
    await analytics.trackPageView({ organizer_id: 'org-stats', session_id: 'tab-1', url, timestamp: at + i * 1000 })
  }
  await analytics.close()
  await rows('SELECT 1')
  const answer = await analytics.stats({
    site_id: 'org-stats',
    date_range: '7d',
    metrics: ['visits', 'pageviews'],
    dimensions: ['visit:utm_campaign'],
  })
  assert.deepEqual(answer.results, [{ dimensions: ['launch'], metrics: [1, 2] }])
  await assert.rejects(
    analytics.stats({ site_id: 'org-stats', date_range: '7d', metrics: ['nope'] }),
    (e) => e.name === 'StatsError' && e.status === 400 && /"nope"/.test(e.message),
  )
  await assert.rejects(
    analytics.stats({ site_id: 'org-other', date_range: '7d', metrics: ['visits'] }),
    (e) => e.name === 'StatsError' && e.status === 403,
  )
})
