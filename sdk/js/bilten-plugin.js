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

// @generated begin fields
// The text fields in the batch's layout (the contract's `text-field` order).
const TEXT = ['id', 'event_type', 'event_name', 'organizer_id', 'user_id', 'session_id', 'event_id', 'properties', 'user_agent', 'ip', 'url', 'referrer', 'order_id', 'currency']
const TABLES = ['events', 'page_views', 'ticket_sales']
const WIT_TABLES = { events: 'events', page_views: 'page-views', ticket_sales: 'ticket-sales' }
// The numbers: each member's batch column and whether it crosses as a
// BigInt (64 bits).
const NUMBERS = [
  { name: 'timestamp_ms', wit: 'timestampMs', column: 'timestampsMs', big: true },
  { name: 'duration_ms', wit: 'durationMs', column: 'durationsMs', big: true },
  { name: 'quantity', wit: 'quantity', column: 'quantities', big: false },
  { name: 'price_cents', wit: 'priceCents', column: 'pricesCents', big: true },
]
// @generated end fields

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
// Each number read from its batch column; the table from its position.
const READ = { table: (b, i) => TABLES[b.tables[i]] }
for (const n of NUMBERS) READ[n.name] = (b, i) => Number(b[n.column][i])
for (const [k, read] of Object.entries(READ)) {
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

const camel = (k) => k.replace(/_([a-z])/g, (_, c) => c.toUpperCase())

function toWit(e) {
  const out = { table: WIT_TABLES[field(e, 'table')] ?? 'events' }
  for (const k of TEXT) {
    const v = field(e, k)
    // An object (`properties`) crosses as its JSON text.
    out[camel(k)] = v != null && typeof v === 'object' ? JSON.stringify(v) : v == null ? '' : String(v)
  }
  for (const n of NUMBERS) {
    const v = Math.trunc(field(e, n.name) ?? 0)
    out[n.wit] = n.big ? BigInt(v) : v
  }
  return out
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
