// Bilten Analytics plugins in JavaScript: the same contract as the Rust SDK
// (`bilten:plugin@1.0.0`, sdk/wit/plugin.wit), in JavaScript's idiom.
//
// A plugin is a module with `name`, `version` and
//   export function check(event, config) { return keep() }
// returning keep(), drop(), reject(code, field, message) or modify(event);
// an optional `init(config)` runs once per batch before the first check.
// `bilten-analytics plugin build` turns it into a WebAssembly component.

const KEEP = { tag: 'keep' }
const DROP = { tag: 'drop' }

/** Store the event as it is. */
export const keep = () => KEEP
/** Discard it; the server counts it. */
export const drop = () => DROP
/** Refuse it: the client sees the code, the field and the message. */
export const reject = (code, field, message) => ({
  tag: 'reject',
  val: { code: String(code), message: String(message ?? code), field: field == null ? undefined : String(field) },
})
/** Store this event instead: same id and organizer, validated again. */
export const modify = (event) => ({ tag: 'modify', val: toWit(event) })

// The text fields in the batch's layout (the contract's `text-field` order).
const TEXT = ['id', 'event_type', 'event_name', 'organizer_id', 'user_id', 'session_id', 'event_id',
  'properties', 'user_agent', 'ip', 'url', 'referrer', 'order_id', 'currency']
const TABLES = ['events', 'page_views', 'ticket_sales']
const WIT_TABLES = { events: 'events', page_views: 'page-views', ticket_sales: 'ticket-sales' }

// Where an event came from (its batch and index), under a symbol, so that a
// copy made with `{ ...event, field: value }` still carries every field it
// does not set.
const SRC = Symbol('batch and index')

// An own property, once computed: later reads are plain reads.
const own = (e, k, value) => {
  Object.defineProperty(e, k, { value, writable: true, enumerable: true, configurable: true })
  return value
}

/**
 * One event of a batch. A field is decoded when first read (most plugins
 * read two or three), then kept; `properties` is parsed when first read.
 */
class PluginEvent {
  constructor(batch, i) {
    this[SRC] = { batch, i }
  }
}
TEXT.forEach((k, f) => {
  Object.defineProperty(PluginEvent.prototype, k, {
    get() {
      const { batch, i } = this[SRC]
      const b = TEXT.length * i + f
      const text = batch.text.slice(batch.offsets[b], batch.offsets[b + 1])
      return own(this, k, k === 'properties' ? JSON.parse(text || '{}') : text)
    },
    set(value) {
      own(this, k, value)
    },
  })
})
const NUMBERS = {
  table: (b, i) => TABLES[b.tables[i]],
  timestamp_ms: (b, i) => Number(b.timestampsMs[i]),
  duration_ms: (b, i) => Number(b.durationsMs[i]),
  quantity: (b, i) => b.quantities[i],
  price_cents: (b, i) => Number(b.pricesCents[i]),
}
for (const [k, read] of Object.entries(NUMBERS)) {
  Object.defineProperty(PluginEvent.prototype, k, {
    get() {
      const { batch, i } = this[SRC]
      return own(this, k, read(batch, i))
    },
    set(value) {
      own(this, k, value)
    },
  })
}

const eventAt = (batch, i) => new PluginEvent(batch, i)

/** A field of `e`, or of the event it was copied from. */
function field(e, k) {
  if (k in e) return e[k]
  const src = e[SRC]
  return src ? new PluginEvent(src.batch, src.i)[k] : undefined
}

function toWit(e) {
  const text = (k) => {
    const v = field(e, k)
    return v == null ? '' : String(v)
  }
  const num = (k) => Math.trunc(field(e, k) ?? 0)
  const p = field(e, 'properties')
  return {
    id: text('id'),
    table: WIT_TABLES[field(e, 'table')] ?? 'events',
    timestampMs: BigInt(num('timestamp_ms')),
    eventType: text('event_type'),
    eventName: text('event_name'),
    organizerId: text('organizer_id'),
    userId: text('user_id'),
    sessionId: text('session_id'),
    eventId: text('event_id'),
    properties: typeof p === 'string' ? p : JSON.stringify(p ?? {}),
    userAgent: text('user_agent'),
    ip: text('ip'),
    url: text('url'),
    referrer: text('referrer'),
    durationMs: BigInt(num('duration_ms')),
    orderId: text('order_id'),
    quantity: num('quantity'),
    priceCents: BigInt(num('price_cents')),
    currency: text('currency'),
  }
}

/** The component's export for a plugin module (the build's entry uses it). */
export function validator(plugin) {
  let config = {}
  return {
    info: () => ({ name: String(plugin.name ?? 'js-plugin'), version: String(plugin.version ?? '0.0.0') }),
    init(text) {
      // A throw here is init's error: the batch fails under the plugin's policy.
      config = JSON.parse(text)
      if (typeof plugin.init === 'function') plugin.init(config)
    },
    process(batch) {
      const n = batch.tables.length
      const out = new Array(n)
      for (let i = 0; i < n; i++) out[i] = plugin.check(eventAt(batch, i), config) ?? KEEP
      return out
    },
  }
}
