"""Drives /dashboard in headless Chromium with Playwright, as a user would.

Run by server/tests/dashboard.rs, which starts the server, stores known
sales and passes what the views say (EXPECT, JSON). Prints {"checked": "ok"}
on stdout when every check holds; any failed check raises, non-zero exit.

Environment: DASHBOARD_URL, CHROMIUM (the browser binary), ADMIN_TOKEN,
READ_KEY, EXPECT, SCREENSHOT (where to save the page as seen).
"""

import json
import os
import re

from playwright.sync_api import expect, sync_playwright

URL = os.environ["DASHBOARD_URL"]
EXPECTED = json.loads(os.environ["EXPECT"])


def number(text):
    """A figure as the page writes it ("1,234.50") as a float."""
    return float(re.sub(r"[^0-9.\-]", "", text))


def sign_in(page, token):
    page.goto(URL)
    expect(page.get_by_role("heading", name="Sign in to the dashboard")).to_be_visible()
    page.get_by_label("Token or read key").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator('[data-kpi="revenue"]')).to_be_visible()


def kpi(page, name):
    return number(page.locator(f'[data-kpi="{name}"] .value').inner_text())


def revenue_shown(page):
    """The revenue tile's amounts by currency, as its lines carry them."""
    lines = page.locator('[data-kpi="revenue"] .amount[data-currency]')
    return {
        lines.nth(i).get_attribute("data-currency"): float(lines.nth(i).get_attribute("data-v"))
        for i in range(lines.count())
    }


def per_currency(amounts):
    """The views' Map(String, Decimal) as {currency: float}."""
    return {c: float(a) for c, a in amounts.items()}


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=os.environ["CHROMIUM"], args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        # A wrong token gets the form again, with the reason.
        page.goto(URL)
        page.get_by_label("Token or read key").fill("not-the-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("neither the admin token")
        assert page.locator("[data-kpi]").count() == 0

        # The admin sees every organizer; the figures shown are the views'.
        sign_in(page, os.environ["ADMIN_TOKEN"])
        daily = EXPECTED["daily"]
        for name, key in [
            ("events", "events"),
            ("page_views", "page_views"),
            ("orders", "orders"),
            ("tickets", "tickets"),
        ]:
            shown, want = kpi(page, name), float(daily[key])
            assert shown == want, f"{name}: the page shows {shown}, the views say {want}"
        # Revenue: a line per currency, as the views keep it; never one sum.
        want = per_currency(daily["revenue"])
        assert len(want) >= 2, want
        assert revenue_shown(page) == want, (revenue_shown(page), want)
        tile = page.locator('[data-kpi="revenue"] .value').inner_text()
        for currency, amount in want.items():
            assert f"{amount:,.2f} {currency}" in tile, tile
        # The revenue chart: a line per currency, each named in the legend.
        legend = page.locator("#revenue .legend").inner_text()
        for currency in want:
            assert currency in legend, legend
            assert page.locator(f'#revenue [data-series="{currency}"]').count() > 0, currency
        # The session cookie is out of the page's scripts' reach.
        assert page.evaluate("document.cookie") == "", "the session cookie is HttpOnly"
        cookie = [c for c in context.cookies() if c["name"] == "bilten_session"][0]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie

        # Charts laid out with a size, with ticks and readable labels.
        for chart in ["realtime", "traffic", "page_views", "revenue", "tickets", "funnel"]:
            box = page.locator(f"#{chart} svg").bounding_box()
            assert box and box["width"] > 200 and box["height"] > 50, (chart, box)
        ticks = page.locator("#revenue text.tick.x").all_text_contents()
        assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), ticks
        assert all(re.fullmatch(r"\d{1,2} [A-Z][a-z]{2}", t) for t in ticks), ticks

        # The funnel's steps, in order, with the views' users.
        funnel = {r["step"]: float(r["users"]) for r in EXPECTED["funnel"]}
        bars = page.locator("#funnel rect.bar")
        steps = ["page_view", "view_event", "add_to_cart", "checkout", "purchase"]
        assert bars.count() == len(steps)
        for i, step in enumerate(steps):
            assert float(bars.nth(i).get_attribute("data-v")) == funnel.get(step, 0.0), step

        # The table sorts by a column when its header is clicked; revenue by
        # the currency with the most of it (amounts in others do not compare).
        main = max(want, key=want.get)
        table = page.locator("#performance table")
        expect(page.locator("#performance h2")).to_contain_text(f"revenue sorts by {main}")
        in_main = {
            r["event_id"]: float(r["revenue"].get(main, 0)) for r in EXPECTED["events"]
        }
        for order in (True, False):
            table.get_by_role("button", name="Revenue").click()
            shown = [
                float(v)
                for v in table.locator("tbody tr td:nth-child(6)").evaluate_all(
                    "cells => cells.map(c => c.dataset.v)"
                )
            ]
            assert shown == sorted(in_main.values(), reverse=order), shown
        for row in EXPECTED["events"]:
            cell = table.locator(f'tr[data-event="{row["event_id"]}"] td:nth-child(6)').inner_text()
            for currency, amount in per_currency(row["revenue"]).items():
                assert f"{amount:,.2f} {currency}" in cell, (row, cell)
        table.get_by_role("button", name="Event").click()

        # The filter: one organizer, through the form.
        page.select_option("select[name=organizer]", "org-b")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator('[data-kpi="revenue"] .value')).to_have_text("40.00 EUR")
        page.select_option("select[name=organizer]", "")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator('[data-kpi="revenue"] .amount')).to_have_count(len(want))
        assert revenue_shown(page) == want
        page.screenshot(path=os.environ["SCREENSHOT"], full_page=True)

        # The realtime panel refreshes itself in place every 30 s: the
        # page's own timer, on a clock moved forward.
        page.clock.install()
        page.reload()
        with page.expect_response(
            lambda r: "/dashboard/realtime" in r.url and r.status == 200
        ):
            page.clock.fast_forward("00:31")
        expect(page.locator("#realtime svg")).to_be_visible()
        assert page.locator("#realtime circle.point").count() > 0

        # Signing out: the form again, and the old page shows nothing.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in to the dashboard")).to_be_visible()
        page.goto(URL)
        assert page.locator("[data-kpi]").count() == 0

        # A read key sees its organizer only, and cannot ask for another.
        sign_in(page, os.environ["READ_KEY"])
        assert page.locator("select[name=organizer] option").all_inner_texts() == ["org-a"]
        assert revenue_shown(page) == {"EUR": 51.0, "USD": 100.0}, revenue_shown(page)
        response = page.goto(URL + "?organizer=org-b")
        assert response.status == 403
        expect(page.get_by_role("alert")).to_contain_text("org-a only")
        assert page.locator("[data-kpi]").count() == 0

        assert not errors, errors
        browser.close()
    print(json.dumps({"checked": "ok"}))


if __name__ == "__main__":
    main()
