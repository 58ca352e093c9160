// Segment's own Node library, unmodified, pointed at this server by its
// host. Run by tests/segment.rs; prints the messages it sent (as JSON, one
// line) and exits non-zero on any delivery error.
import { Analytics } from '@segment/analytics-node'

const analytics = new Analytics({
  writeKey: process.env.WRITE_KEY,
  host: process.env.HOST,
  flushAt: 20,
  maxRetries: 2,
})
const sent = []
analytics.on('http_request', (r) => sent.push(...JSON.parse(r.body).batch))
analytics.on('error', (e) => {
  console.error('delivery error:', e?.reason ?? e)
  process.exitCode = 1
})

const context = {
  ip: '203.0.113.7',
  userAgent: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148',
}
analytics.identify({ userId: 'user-1', traits: { plan: 'pro', name: 'Ada' }, context })
analytics.page({
  userId: 'user-1',
  name: 'Event Details',
  properties: { url: 'https://tickets.example/events/evt-42', referrer: 'https://search.example/', event_id: 'evt-42' },
  context,
})
analytics.track({
  userId: 'user-1',
  event: 'Order Completed',
  properties: { event_id: 'evt-42', revenue: 99.5, currency: 'EUR', products: [{ sku: 'vip', quantity: 2 }] },
  context,
})
analytics.track({ anonymousId: 'anon-9', event: 'Checkout Started', properties: { event_id: 'evt-42' } })
analytics.screen({ userId: 'user-1', name: 'Seat Map', properties: { section: 'A' } })
analytics.group({ userId: 'user-1', groupId: 'company-7', traits: { employees: 40 } })
analytics.alias({ userId: 'user-1', previousId: 'anon-9' })
await analytics.closeAndFlush()
console.log(JSON.stringify(sent))
console.log('segment: ok')
