// The browser tracker, served at /v1/tracker.js:
//
//   <script defer src="https://analytics.example.com/v1/tracker.js"
//           data-organizer="org-123" data-key="PUBLIC_KEY"></script>
//
// - A page view per page and per SPA navigation (pushState, popstate), with
//   its referrer, sent when it starts: realtime counts the visitor at once.
// - Its engagement, each time the page is hidden or left (or the SPA
//   navigates): the time the view was visible since the last one, for the
//   view's id. The server adds them up; a view whose end never comes is
//   still counted, with no time.
// - `window.bilten.track(event_type, properties)` for custom events, and
//   `window.bilten.identify(user_id)` once the visitor signs in (sent at
//   once as an `identify` event, which ties the visit to the user).
// - Sent with `sendBeacon` (or `fetch` with `keepalive`) as text/plain, so a
//   page of another origin needs no CORS preflight, and nothing is lost when
//   the page closes. No cookies: the session id lives in sessionStorage (the
//   tab's), and the server adds the browser's user agent and address.

import { uuidv7 } from './uuid'

interface View {
  id: string
  url: string
  // Visible time not yet sent, in ms.
  visible: number
  shownAt: number | null
}

// The most one engagement may say (the server's limit: a day).
const MAX_MS = 86_400_000

;(() => {
  const script = document.currentScript as HTMLScriptElement | null
  if (!script) return
  const data = script.dataset
  const organizer = data.organizer || ''
  const base = (data.endpoint || new URL(script.src).origin) + '/v1/collect/'
  const query = data.key ? '?key=' + encodeURIComponent(data.key) : ''
  let session = ''
  try {
    session = sessionStorage.getItem('bilten_sid') || ''
    if (!session) sessionStorage.setItem('bilten_sid', (session = uuidv7()))
  } catch {
    session = uuidv7()
  }
  let user = ''

  const send = (kind: string, event: Record<string, unknown>) => {
    if (!event.id) event.id = uuidv7()
    event.organizer_id = organizer
    event.session_id = session
    if (user) event.user_id = user
    const url = base + kind + query
    const body = JSON.stringify(event)
    if (!(navigator.sendBeacon && navigator.sendBeacon(url, body))) {
      fetch(url, { method: 'POST', body, keepalive: true, credentials: 'omit', headers: { 'content-type': 'text/plain' } }).catch(() => {})
    }
  }

  const now = () => performance.now()
  let view: View | null = null
  const begin = (referrer: string) => {
    const id = uuidv7()
    view = { id, url: location.href, visible: 0, shownAt: document.visibilityState === 'visible' ? now() : null }
    send('page-views', { id, url: location.href, referrer, timestamp: Date.now() })
  }
  // Sends the time the current view was visible since the last time.
  const engage = () => {
    const v = view
    if (!v) return
    if (v.shownAt !== null) v.visible += now() - v.shownAt
    v.shownAt = null
    const ms = Math.min(Math.round(v.visible), MAX_MS)
    v.visible = 0
    if (ms > 0) send('engagements', { view_id: v.id, duration_ms: ms, timestamp: Date.now() })
  }
  const navigated = () => {
    const from = view ? view.url : ''
    if (from === location.href) return
    engage()
    begin(from)
  }

  const push = history.pushState
  history.pushState = function (this: History, ...args: Parameters<History['pushState']>) {
    push.apply(this, args)
    navigated()
  }
  addEventListener('popstate', navigated)
  addEventListener('pagehide', engage)
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') engage()
    else if (view && view.shownAt === null) view.shownAt = now()
  })

  ;(window as unknown as { bilten: object }).bilten = {
    track(event_type: string, properties?: Record<string, unknown>) {
      const p: Record<string, unknown> = { url: location.href }
      for (const k in properties || {}) p[k] = properties![k]
      // No timestamp: sent at once, so the server's clock of receipt is
      // the right time, whatever the visitor's clock says.
      send('events', { event_type, properties: p })
    },
    identify(id: string) {
      user = String(id || '')
      // Said at once, in this visit: the campaign that brought the visitor
      // in is then the user's, and a sale the backend sends later with only
      // the user's id is credited to it.
      if (user) send('events', { event_type: 'identify' })
    },
  }
  begin(document.referrer)
})()
