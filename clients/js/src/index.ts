// @bilten/analytics: the seed's AnalyticsIngestionService for Node (≥ 18)
// and browsers. Events are queued per table and sent in batches (1000 events
// or every 5 s by default), each with a UUIDv7 id made here, so a batch sent
// twice (a retry after a lost answer) is stored once.

import { uuidv7 } from './uuid'

export { uuidv7 }

// @generated begin tables
/** The server's tables, as its routes name them. */
export type Table = 'events' | 'page-views' | 'ticket-sales'

type Time = string | number | Date

/** `POST /v1/events`: a page view, click, funnel step or any custom event. */
export interface TrackedEvent {
  /** What happened: `page_view`, `add_to_cart`, `purchase`, … */
  event_type: string
  /** The organizer the event belongs to. */
  organizer_id: string
  /** The event's id (a UUID); sent again, the event is stored once. Made by the server when absent. */
  id?: string
  /** When it happened: RFC 3339 text or epoch milliseconds; now when absent. */
  timestamp?: Time
  /** A name for it, shown in reports. */
  event_name?: string
  /** Who did it. */
  user_id?: string
  /** The visit it belongs to. */
  session_id?: string
  /** The ticketed event (concert, show) it concerns. */
  event_id?: string
  /** A JSON object of anything else (at most 64 KiB). */
  properties?: Record<string, unknown>
  /** The browser's User-Agent. */
  user_agent?: string
  /** The client's address (truncated by the privacy plugin). */
  ip?: string
}

/** `POST /v1/page-views`. */
export interface PageView {
  /** The organizer the event belongs to. */
  organizer_id: string
  /** The page's URL. */
  url: string
  /** The event's id (a UUID); sent again, the event is stored once. Made by the server when absent. */
  id?: string
  /** When it happened: RFC 3339 text or epoch milliseconds; now when absent. */
  timestamp?: Time
  /** Who did it. */
  user_id?: string
  /** The visit it belongs to. */
  session_id?: string
  /** The ticketed event (concert, show) it concerns. */
  event_id?: string
  /** The page the visitor came from. */
  referrer?: string
  /** Time on the page, in milliseconds (at most a day). */
  duration_ms?: number
  /** The browser's User-Agent. */
  user_agent?: string
  /** The client's address (truncated by the privacy plugin). */
  ip?: string
}

/** `POST /v1/ticket-sales`. Prices as numbers or decimal text ("50.00"). */
export interface TicketSale {
  /** The ticketed event (concert, show) it concerns. */
  event_id: string
  /** The organizer the event belongs to. */
  organizer_id: string
  /** Tickets sold (1 to 10 000). */
  quantity: number
  /** The price of the sale, in the currency: at most two decimals. */
  price: number | string
  /** ISO 4217 code, e.g. EUR. */
  currency: string
  /** The event's id (a UUID); sent again, the event is stored once. Made by the server when absent. */
  id?: string
  /** When it happened: RFC 3339 text or epoch milliseconds; now when absent. */
  timestamp?: Time
  /** Who did it. */
  user_id?: string
  /** The order the tickets were bought in. */
  order_id?: string
}
// @generated end tables

/** An event the server refused, and why. It is not sent again. */
export interface Rejection {
  table: Table
  event: Record<string, unknown>
  field?: string
  reason: string
  /** A plugin's rejection code, and the plugin. */
  code?: string
  plugin?: string
}

export interface Options {
  /** The server. Default: `BILTEN_ANALYTICS_URL` in Node, else `http://localhost:8080`. */
  url?: string
  /** An ingest key (a public key in pages). Default: `BILTEN_INGEST_KEY` in Node. */
  apiKey?: string
  /** Events per request, and a table's queue length that sends at once. Default 1000. */
  batchSize?: number
  /** Milliseconds between sends of whatever is queued. Default 5000. */
  flushInterval?: number
  /**
   * Events held at most (all tables). Past it the oldest are dropped and
   * reported to `onError` as a `QueueOverflowError`. Default 10000.
   */
  maxQueueSize?: number
  /** Retries of one batch before it goes back to the queue. Default 5. */
  maxRetries?: number
  /** The first retry's delay in ms, doubled each time, with jitter. Default 500. */
  retryDelay?: number
  /** The longest wait between retries, in ms (`Retry-After` included). Default 30000. */
  maxRetryDelay?: number
  /** A request's time limit in ms. Default 10000. */
  timeout?: number
  /** In Node, bodies above this many bytes are sent gzipped. Default 16384. */
  gzipAbove?: number
  /** Called for each event the server refuses. */
  onRejected?: (rejection: Rejection) => void
  /** Called when a batch cannot be delivered or events are dropped. Default: a console warning. */
  onError?: (error: Error) => void
  /** The `fetch` to use. Default: the global one. */
  fetch?: typeof fetch
  /** An organizer's read key, for `stats()`. Default: `BILTEN_READ_KEY` in Node. */
  readKey?: string
}

/** A Stats API query, in Plausible's Stats API v2 shape (`site_id` is the organizer). */
export interface StatsQuery {
  site_id: string
  metrics: string[]
  date_range: string | [string, string]
  dimensions?: string[]
  filters?: unknown[]
  order_by?: [string, 'asc' | 'desc'][]
  include?: { total_rows?: boolean; imports?: boolean; time_labels?: boolean }
  pagination?: { limit?: number; offset?: number }
}

/** A Stats API answer: a metric is a number, or per currency (`revenue`) a map of currency to amount. */
export interface StatsResult {
  results: { dimensions: string[]; metrics: (number | Record<string, number>)[] }[]
  meta: { elapsed_ms: number; rows_read: number; warnings: string[]; total_rows?: number }
  query: { metrics: string[]; dimensions: string[]; date_range: [string, string] }
}

/** A query the Stats API refused (`status` 400: the message names the field at fault). */
export class StatsError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message)
    this.name = 'StatsError'
  }
}

/** A batch the server did not take. `retriable`: it is back in the queue. */
export class DeliveryError extends Error {
  constructor(
    message: string,
    readonly table: Table,
    readonly events: number,
    readonly status: number | undefined,
    readonly retriable: boolean,
  ) {
    super(message)
    this.name = 'DeliveryError'
  }
}

/** The queue was full: this many of the oldest events were dropped. */
export class QueueOverflowError extends Error {
  constructor(readonly dropped: number) {
    super(`the queue is full: ${dropped} oldest event(s) dropped`)
    this.name = 'QueueOverflowError'
  }
}

type Row = Record<string, unknown>

const TABLES: Table[] = ['events', 'page-views', 'ticket-sales']

interface Queue {
  items: Row[]
  /** The send in progress: one at a time per table. */
  sending: Promise<void>
}

interface NodeProcess {
  env: Record<string, string | undefined>
  versions?: { node?: string }
  on(event: string, f: () => void): void
  off(event: string, f: () => void): void
}

const nodeProcess = (): NodeProcess | undefined => {
  const p = (globalThis as { process?: NodeProcess }).process
  return p && p.versions && p.versions.node ? p : undefined
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export class AnalyticsIngestionService {
  private readonly url: string
  private readonly apiKey?: string
  private readonly readKey?: string
  private readonly batchSize: number
  private readonly maxQueueSize: number
  private readonly maxRetries: number
  private readonly retryDelay: number
  private readonly maxRetryDelay: number
  private readonly timeout: number
  private readonly gzipAbove: number
  private readonly onRejected?: (r: Rejection) => void
  private readonly onError: (e: Error) => void
  private readonly fetch: typeof fetch
  private readonly queues = new Map<Table, Queue>()
  private readonly timer: ReturnType<typeof setInterval>
  private readonly beforeExit = () => {
    // Node is about to exit with events still queued: send them first
    // (the sending keeps the process alive until it is done). Once only:
    // with the server unreachable, exiting must not wait forever.
    if (this.pending() > 0 && !this.exitTried) {
      this.exitTried = true
      clearInterval(this.timer)
      this.flush().catch((e: Error) => this.onError(new Error(`at exit, ${this.pending()} event(s) not delivered: ${e.message}`)))
    }
  }
  private exitTried = false
  private closed = false

  constructor(options: Options = {}) {
    const env = nodeProcess()?.env ?? {}
    this.url = (options.url ?? env.BILTEN_ANALYTICS_URL ?? 'http://localhost:8080').replace(/\/+$/, '')
    this.apiKey = options.apiKey ?? env.BILTEN_INGEST_KEY
    this.readKey = options.readKey ?? env.BILTEN_READ_KEY
    this.batchSize = positive(options.batchSize ?? 1000, 'batchSize')
    this.maxQueueSize = positive(options.maxQueueSize ?? 10_000, 'maxQueueSize')
    this.maxRetries = Math.max(0, options.maxRetries ?? 5)
    this.retryDelay = positive(options.retryDelay ?? 500, 'retryDelay')
    this.maxRetryDelay = positive(options.maxRetryDelay ?? 30_000, 'maxRetryDelay')
    this.timeout = positive(options.timeout ?? 10_000, 'timeout')
    this.gzipAbove = options.gzipAbove ?? 16_384
    this.onRejected = options.onRejected
    const onError = options.onError ?? ((e: Error) => console.warn(`[bilten analytics] ${e.message}`))
    this.onError = (e) => {
      try {
        onError(e)
      } catch {
        // The app's error callback failed too: nowhere left to say so.
      }
    }
    const f = options.fetch ?? (globalThis as { fetch?: typeof fetch }).fetch
    if (!f) throw new Error('no fetch: pass options.fetch (Node 18 and browsers have one)')
    // A browser's fetch must be called on the window, never as a method of
    // this object ("Illegal invocation").
    this.fetch = options.fetch ?? f.bind(globalThis)
    for (const t of TABLES) this.queues.set(t, { items: [], sending: Promise.resolve() })
    const interval = positive(options.flushInterval ?? 5000, 'flushInterval')
    this.timer = setInterval(() => {
      this.flush().catch((e: Error) => this.onError(e))
    }, interval)
    // The timer alone does not keep Node running; queued events are sent at exit.
    ;(this.timer as { unref?: () => void }).unref?.()
    nodeProcess()?.on('beforeExit', this.beforeExit)
  }

  /** Queues an event for `/v1/events`. Resolves once queued. */
  trackEvent(event: TrackedEvent): Promise<void> {
    return this.enqueue('events', event)
  }

  /** Queues a page view for `/v1/page-views`. */
  trackPageView(view: PageView): Promise<void> {
    return this.enqueue('page-views', view)
  }

  /** Queues a ticket sale for `/v1/ticket-sales`. */
  trackTicketSale(sale: TicketSale): Promise<void> {
    return this.enqueue('ticket-sales', sale)
  }

  /**
   * Asks the Stats API (`POST /api/v2/query`) with the read key. Rejects
   * with a `StatsError` carrying the server's message when it refuses.
   */
  async stats(query: StatsQuery): Promise<StatsResult> {
    if (!this.readKey) throw new StatsError('stats() needs a read key: options.readKey or BILTEN_READ_KEY', 0)
    const abort = new AbortController()
    const timer = setTimeout(() => abort.abort(), this.timeout)
    try {
      const send = this.fetch
      const res = await send(`${this.url}/api/v2/query`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this.readKey}` },
        body: JSON.stringify(query),
        signal: abort.signal,
      })
      const body = (await res.json().catch(() => ({}))) as { error?: string }
      if (!res.ok) throw new StatsError(body.error ?? `the Stats API answered ${res.status}`, res.status)
      return body as unknown as StatsResult
    } finally {
      clearTimeout(timer)
    }
  }

  /** Events queued and not yet sent. */
  pending(): number {
    let n = 0
    for (const q of this.queues.values()) n += q.items.length
    return n
  }

  /**
   * Sends everything queued. Rejects with a `DeliveryError` when a batch
   * could not be delivered (a retriable one is back in the queue).
   */
  async flush(): Promise<void> {
    const results = await Promise.allSettled(TABLES.map((t) => this.send(t)))
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) throw failed.reason
  }

  /** Sends what is queued and stops the timer; later tracking is refused. */
  async close(): Promise<void> {
    this.closed = true
    clearInterval(this.timer)
    nodeProcess()?.off('beforeExit', this.beforeExit)
    await this.flush()
  }

  private enqueue(table: Table, event: object): Promise<void> {
    if (this.closed) return Promise.reject(new Error('this AnalyticsIngestionService is closed'))
    if (event === null || typeof event !== 'object') {
      return Promise.reject(new TypeError(`an event is an object, got ${event === null ? 'null' : typeof event}`))
    }
    const row: Row = { ...(event as Row) }
    if (row.id == null) row.id = uuidv7()
    // The time it happened, not the time the batch leaves.
    if (row.timestamp == null) row.timestamp = new Date().toISOString()
    else if (row.timestamp instanceof Date) row.timestamp = row.timestamp.toISOString()
    const q = this.queues.get(table)!
    q.items.push(row)
    this.trim()
    if (q.items.length >= this.batchSize) {
      this.send(table).catch((e: Error) => this.onError(e))
    }
    return Promise.resolve()
  }

  private report(thrown: unknown): void {
    this.onError(thrown instanceof Error ? thrown : new Error(String(thrown)))
  }

  /** Past `maxQueueSize`, drops the oldest events of the longest queue. */
  private trim(): void {
    let over = this.pending() - this.maxQueueSize
    if (over <= 0) return
    const dropped = over
    while (over > 0) {
      const longest = [...this.queues.values()].reduce((a, b) => (b.items.length > a.items.length ? b : a))
      const n = Math.min(over, longest.items.length)
      longest.items.splice(0, n)
      over -= n
    }
    this.onError(new QueueOverflowError(dropped))
  }

  /** Sends a table's queue in batches, one send at a time. */
  private send(table: Table): Promise<void> {
    const q = this.queues.get(table)!
    const run = async () => {
      while (q.items.length > 0) {
        const batch = q.items.splice(0, this.batchSize)
        try {
          await this.deliver(table, batch)
        } catch (e) {
          if (e instanceof DeliveryError && e.retriable) {
            // Kept, in order, for the next send; their ids make a resend harmless.
            q.items.unshift(...batch)
            this.trim()
          }
          throw e
        }
      }
    }
    const next = q.sending.catch(() => undefined).then(run)
    q.sending = next
    return next
  }

  /** One batch, retried on network errors, 408, 429 and 5xx. */
  private async deliver(table: Table, batch: Row[]): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      let status: number | undefined
      let reason: string
      let retryAfter: number | undefined
      try {
        const res = await this.post(table, batch)
        status = res.status
        const text = await res.text()
        let body: { errors?: Array<{ index: number; field?: string; reason: string; code?: string; plugin?: string }>; error?: string } = {}
        try {
          body = JSON.parse(text)
        } catch {
          // Not JSON (a proxy's page, say): the status decides.
        }
        if (res.ok || (res.status === 400 && Array.isArray(body.errors))) {
          for (const e of body.errors ?? []) {
            // An app's callback that throws must not make a delivered batch look failed.
            try {
              this.onRejected?.({ table, event: batch[e.index], field: e.field, reason: e.reason, code: e.code, plugin: e.plugin })
            } catch (thrown) {
              this.report(thrown)
            }
          }
          return
        }
        reason = body.error ?? (text.slice(0, 200) || res.statusText)
        retryAfter = parseRetryAfter(res.headers.get('retry-after'))
        if (!(res.status === 408 || res.status === 429 || res.status >= 500)) {
          throw new DeliveryError(
            `${table}: ${batch.length} event(s) refused with ${res.status}: ${reason}`,
            table,
            batch.length,
            res.status,
            false,
          )
        }
      } catch (e) {
        if (e instanceof DeliveryError) throw e
        reason = e instanceof Error ? e.message : String(e)
      }
      if (attempt >= this.maxRetries) {
        throw new DeliveryError(
          `${table}: ${batch.length} event(s) not delivered after ${attempt + 1} attempt(s) (${status ?? 'no answer'}: ${reason}); kept for the next send`,
          table,
          batch.length,
          status,
          true,
        )
      }
      await sleep(this.backoff(attempt, retryAfter))
    }
  }

  /** The wait before retry `attempt` + 1: `Retry-After`, or doubling with jitter. */
  backoff(attempt: number, retryAfterMs?: number): number {
    if (retryAfterMs !== undefined) return Math.min(retryAfterMs, this.maxRetryDelay)
    const full = Math.min(this.maxRetryDelay, this.retryDelay * 2 ** attempt)
    return full / 2 + Math.random() * (full / 2)
  }

  private async post(table: Table, batch: Row[]): Promise<Response> {
    const json = JSON.stringify(batch)
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`
    let body: string | Uint8Array = json
    if (nodeProcess() && json.length > this.gzipAbove) {
      // Named through a variable: bundlers for browsers leave it alone.
      const name = 'node:zlib'
      const zlib = (await import(name)) as { gzipSync(text: string): Uint8Array }
      body = zlib.gzipSync(json)
      headers['content-encoding'] = 'gzip'
    }
    const abort = new AbortController()
    const timer = setTimeout(() => abort.abort(), this.timeout)
    try {
      const send = this.fetch
      return await send(`${this.url}/v1/${table}`, { method: 'POST', headers, body, signal: abort.signal })
    } finally {
      clearTimeout(timer)
    }
  }
}

function positive(n: number, name: string): number {
  if (!(n > 0) || !Number.isFinite(n)) throw new RangeError(`${name} must be a positive number, got ${n}`)
  return n
}

/** `Retry-After` in ms: seconds, or an HTTP date. */
export function parseRetryAfter(value: string | null): number | undefined {
  if (!value) return undefined
  const seconds = Number(value)
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000)
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now())
}
