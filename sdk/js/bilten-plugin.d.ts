// Types of the JavaScript SDK for Bilten Analytics plugins.

// @generated begin event
export type Table = 'events' | 'page_views' | 'ticket_sales'

/** One event, as `check` reads it. Fields a table does not have are empty or zero. */
export interface PluginEvent {
  /** The event's id (a UUID); sent again, the event is stored once. Made by the server when absent. */
  id: string
  table: Table
  /** Milliseconds since the Unix epoch, UTC. */
  timestamp_ms: number
  /** What happened: `page_view`, `add_to_cart`, `purchase`, … Only `events`; elsewhere `page-views`: "page_view", `ticket-sales`: "ticket_sale". */
  event_type: string
  /** A name for it, shown in reports. Only `events`; elsewhere empty. */
  event_name: string
  /** The organizer the event belongs to. */
  organizer_id: string
  /** Who did it. */
  user_id: string
  /** The visit it belongs to. Only `events`, `page-views`; elsewhere empty. */
  session_id: string
  /** The ticketed event (concert, show) it concerns. */
  event_id: string
  /** A JSON object of anything else (at most 64 KiB). Only `events`; elsewhere `{}`. */
  properties: Record<string, unknown>
  /** The browser's User-Agent. Only `events`, `page-views`; elsewhere empty. */
  user_agent: string
  /** The client's address (truncated by the privacy plugin). Only `events`, `page-views`; elsewhere empty. */
  ip: string
  /** The page's URL. Only `page-views`; elsewhere empty. */
  url: string
  /** The page the visitor came from. Only `page-views`; elsewhere empty. */
  referrer: string
  /** Time on the page, in milliseconds. Only `page-views`; elsewhere zero. */
  duration_ms: number
  /** The order the tickets were bought in. Only `ticket-sales`; elsewhere empty. */
  order_id: string
  /** Tickets sold. Only `ticket-sales`; elsewhere zero. */
  quantity: number
  /** Hundredths of the currency unit: 12.50 is 1250. Only `ticket-sales`; elsewhere zero. */
  price_cents: number
  /** ISO 4217 code, e.g. EUR. Only `ticket-sales`; elsewhere empty. */
  currency: string
}
// @generated end event

export type Verdict =
  | { tag: 'keep' }
  | { tag: 'drop' }
  | { tag: 'reject'; val: { code: string; message: string; field?: string } }
  | { tag: 'modify'; val: unknown }

export function keep(): Verdict
export function drop(): Verdict
export function reject(code: string, field: string | null, message: string): Verdict
export function modify(event: PluginEvent): Verdict

export interface PluginModule {
  name: string
  version: string
  init?(config: Record<string, unknown>): void
  check(event: PluginEvent, config: Record<string, unknown>): Verdict | undefined
}

export function validator(plugin: PluginModule): unknown
