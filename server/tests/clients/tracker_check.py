"""The browser tracker in headless Chromium, on a page of another origin.

Run by tests/tracker.rs: opens SITE/, checks that its view is counted in
realtime while the page is still open, keeps it open 5 s, sends a custom
event, navigates the SPA way (pushState), then for real (a link), then
leaves. Prints the browser's user agent and what realtime said as JSON; the
test checks the rows.
"""

import json
import os
import urllib.request

from playwright.sync_api import sync_playwright

SITE = os.environ["SITE"]
SERVER = os.environ["SERVER"]


def admin(path, body=b""):
    request = urllib.request.Request(
        SERVER + path, data=body, method="POST",
        headers={"Authorization": "Bearer " + os.environ["ADMIN_TOKEN"]},
    )
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=os.environ["CHROMIUM"], args=["--no-sandbox"]
    )
    page = browser.new_page()
    failed = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(SITE + "/")
    page.wait_for_function("window.bilten !== undefined")
    user_agent = page.evaluate("navigator.userAgent")
    # Counted while it is read: the view was sent when it started.
    page.wait_for_timeout(1000)
    admin("/admin/flush")
    realtime = admin(
        "/admin/query",
        b"SELECT toUInt32(sum(events)) AS views FROM bilten_analytics.realtime_dashboard "
        b"WHERE event_type = 'page_view' AND organizer_id = 'org-web'",
    )["data"][0]["views"]
    page.wait_for_timeout(4000)
    page.evaluate("bilten.track('add_to_cart', {event_id: 'evt-1', quantity: 2})")
    page.evaluate("history.pushState({}, '', '/events/evt-1')")
    page.wait_for_timeout(300)
    page.click("#next")
    page.wait_for_url(SITE + "/next")
    page.wait_for_function("window.bilten !== undefined")
    page.evaluate("bilten.identify('user-77')")
    # The package itself in the page, with the public key as its API key.
    sent = page.evaluate(
        """async ([server, key]) => {
            const { AnalyticsIngestionService } = await import('/lib/index.js')
            const errors = []
            const a = new AnalyticsIngestionService({ url: server, apiKey: key, onError: (e) => errors.push(e.message) })
            await a.trackEvent({ event_type: 'from_package', organizer_id: 'org-web' })
            await a.close()
            return errors
        }""",
        [os.environ["SERVER"], os.environ["PUBLIC_KEY"]],
    )
    assert sent == [], sent
    page.wait_for_timeout(200)
    page.goto("about:blank")
    page.wait_for_timeout(500)
    browser.close()
    print(json.dumps({"user_agent": user_agent, "failed": failed, "realtime_views_while_open": realtime}))
