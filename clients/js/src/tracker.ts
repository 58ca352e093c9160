// The browser tracker, served at /v1/tracker.js:
//
//   <script defer src="https://analytics.example.com/v1/tracker.js"
//           data-organizer="org-123" data-key="PUBLIC_KEY"></script>
//
// - A page view per page and per SPA navigation (pushState, popstate), with
//   its referrer. It is sent when the view ends (the page is hidden or left,
//   or the SPA navigates), so that it carries `duration_ms`: the time the
//   page was visible.
// - `window.bilten.track(event_type, properties)` for custom events, and
//   `window.bilten.identify(user_id)` once the visitor signs in (sent at
//   once as an `identify` event, which ties the visit to the user).
// - Sent with `sendBeacon` (or `fetch` with `keepalive`) as text/plain, so a
//   page of another origin needs no CORS preflight, and nothing is lost when
//   the page closes. No cookies: the session id lives in sessionStorage (the
//   tab's), and the server adds the browser's user agent and address.

import { uuidv7 } from './uuid'

interface View {
  url: string
  referrer: string
  start: number
  visible: number
  shownAt: number | null
}

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
    event.id = uuidv7()
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
    view = {
      url: location.href,
      referrer,
      start: Date.now(),
      visible: 0,
      shownAt: document.visibilityState === 'visible' ? now() : null,
    }
  }
  // Sends the current view, once.
  const end = () => {
    const v = view
    if (!v) return
    if (v.shownAt !== null) v.visible += now() - v.shownAt
    view = null
    send('page-views', { url: v.url, referrer: v.referrer, timestamp: v.start, duration_ms: Math.round(v.visible) })
  }
  const navigated = () => {
    const from = view ? view.url : ''
    if (from === location.href) return
    end()
    begin(from)
  }

  const push = history.pushState
  history.pushState = function (this: History, ...args: Parameters<History['pushState']>) {
    push.apply(this, args)
    navigated()
  }
  addEventListener('popstate', navigated)
  addEventListener('pagehide', end)
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') end()
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
