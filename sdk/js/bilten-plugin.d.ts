// Types of the JavaScript SDK for Bilten Analytics plugins.

export type Table = 'events' | 'page_views' | 'ticket_sales'

/** One event, as `check` reads it. Fields a table does not have are empty or zero. */
export interface PluginEvent {
  id: string
  table: Table
  timestamp_ms: number
  event_type: string
  event_name: string
  organizer_id: string
  user_id: string
  session_id: string
  event_id: string
  properties: Record<string, unknown>
  user_agent: string
  ip: string
  url: string
  referrer: string
  duration_ms: number
  order_id: string
  quantity: number
  /** Hundredths of the currency unit: 12.50 is 1250. */
  price_cents: number
  currency: string
}

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
