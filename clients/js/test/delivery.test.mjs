// How requests are built and retried, against a local stand-in that answers
// what a test needs (the real server is in server.test.mjs).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { gunzipSync } from 'node:zlib'
import { AnalyticsIngestionService, parseRetryAfter, uuidv7 } from '@bilten/analytics'

/** A server answering each request with the next of `answers`; records what it got. */
async function standIn(answers) {
  const got = []
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      let body = Buffer.concat(chunks)
      if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body)
      got.push({ url: req.url, headers: req.headers, events: JSON.parse(body.toString()) })
      const [status, json, headers] = answers[Math.min(got.length - 1, answers.length - 1)]
      res.writeHead(status, { 'content-type': 'application/json', ...headers })
      res.end(JSON.stringify(json))
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${server.address().port}`
  return { url, got, close: () => server.close() }
}

const ok = [202, { accepted: 1, rejected: 0, duplicates: 0, errors: [] }]

test('503 with Retry-After, then taken: the same ids are resent', async () => {
  const s = await standIn([[503, { error: 'full' }, { 'retry-after': '0' }], ok])
  const a = new AnalyticsIngestionService({ url: s.url, apiKey: 'k', retryDelay: 1 })
  await a.trackEvent({ event_type: 'x', organizer_id: 'o' })
  await a.close()
  assert.equal(s.got.length, 2)
  assert.equal(s.got[0].url, '/v1/events')
  assert.equal(s.got[0].headers.authorization, 'Bearer k')
  assert.deepEqual(s.got[0].events, s.got[1].events)
  assert.match(s.got[0].events[0].id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
  s.close()
})

test('a 4xx is not retried and the batch is reported', async () => {
  const s = await standIn([[413, { error: 'too large' }]])
  const a = new AnalyticsIngestionService({ url: s.url, retryDelay: 1 })
  await a.trackEvent({ event_type: 'x', organizer_id: 'o' })
  await assert.rejects(a.close(), (e) => e.status === 413 && !e.retriable && /too large/.test(e.message))
  assert.equal(s.got.length, 1)
  assert.equal(a.pending(), 0)
  s.close()
})

test('retries run out: the batch stays queued, in order, for the next send', async () => {
  const s = await standIn([[500, { error: 'internal error' }]])
  const a = new AnalyticsIngestionService({ url: s.url, retryDelay: 1, maxRetries: 2 })
  for (let i = 0; i < 3; i++) await a.trackEvent({ event_type: `e${i}`, organizer_id: 'o' })
  await assert.rejects(a.flush(), (e) => e.retriable && e.events === 3 && /after 3 attempt/.test(e.message))
  assert.equal(s.got.length, 3)
  assert.equal(a.pending(), 3)
  s.got.length = 0
  await assert.rejects(a.close())
  assert.deepEqual(s.got[0].events.map((e) => e.event_type), ['e0', 'e1', 'e2'])
  s.close()
})

test('a full queue drops its oldest events and says how many', async () => {
  const s = await standIn([ok])
  const errors = []
  const a = new AnalyticsIngestionService({ url: s.url, maxQueueSize: 5, onError: (e) => errors.push(e) })
  for (let i = 0; i < 8; i++) await a.trackEvent({ event_type: `e${i}`, organizer_id: 'o' })
  assert.equal(a.pending(), 5)
  assert.deepEqual(errors.map((e) => [e.name, e.dropped]), [['QueueOverflowError', 1], ['QueueOverflowError', 1], ['QueueOverflowError', 1]])
  await a.close()
  assert.deepEqual(s.got[0].events.map((e) => e.event_type), ['e3', 'e4', 'e5', 'e6', 'e7'])
  s.close()
})

test('large bodies go gzipped; rejections come back per event', async () => {
  const s = await standIn([[202, { accepted: 1, rejected: 1, duplicates: 0, errors: [{ index: 1, field: 'url', reason: 'url: required' }] }]])
  const rejected = []
  const a = new AnalyticsIngestionService({ url: s.url, gzipAbove: 100, onRejected: (r) => rejected.push(r) })
  await a.trackPageView({ url: 'https://x.example/' + 'a'.repeat(200), organizer_id: 'o' })
  await a.trackPageView({ organizer_id: 'o', referrer: 'r' })
  await a.close()
  assert.equal(s.got[0].headers['content-encoding'], 'gzip')
  assert.equal(s.got[0].url, '/v1/page-views')
  assert.deepEqual(rejected.map((r) => [r.field, r.event.referrer]), [['url', 'r']])
  s.close()
})

test('a callback that throws does not make a delivered batch look failed', async () => {
  const s = await standIn([[202, { accepted: 0, rejected: 1, duplicates: 0, errors: [{ index: 0, field: 'url', reason: 'url: required' }] }]])
  const errors = []
  const a = new AnalyticsIngestionService({
    url: s.url,
    onRejected: () => {
      throw new Error('app bug')
    },
    onError: (e) => errors.push(e.message),
  })
  await a.trackPageView({ organizer_id: 'o' })
  await a.close()
  assert.equal(s.got.length, 1, 'not resent')
  assert.deepEqual(errors, ['app bug'])
  s.close()
})

test('backoff doubles with jitter, Retry-After wins, capped', () => {
  const a = new AnalyticsIngestionService({ url: 'http://127.0.0.1:9', retryDelay: 100, maxRetryDelay: 1000 })
  clearInterval(a.timer)
  for (let attempt = 0; attempt < 6; attempt++) {
    const full = Math.min(1000, 100 * 2 ** attempt)
    const d = a.backoff(attempt)
    assert.ok(d >= full / 2 && d <= full, `${attempt}: ${d}`)
  }
  assert.equal(a.backoff(0, 5000), 1000)
  assert.equal(parseRetryAfter('3'), 3000)
  const inTwoSeconds = new Date(Date.now() + 2000).toUTCString()
  assert.ok(Math.abs(parseRetryAfter(inTwoSeconds) - 2000) <= 1000)
  assert.equal(parseRetryAfter('soon'), undefined)
})

test('ids are UUIDv7, ordered by time', () => {
  const a = uuidv7(1_700_000_000_000)
  const b = uuidv7(1_700_000_000_001)
  assert.ok(a < b)
  assert.equal(a.slice(0, 13), '018bcfe5-6800')
})
