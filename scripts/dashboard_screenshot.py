"""Screenshots of /dashboard and the admin report, for the README.

    python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright==1.65.2
    bilten-analytics loadgen --total 60000 --spread 21days --admin-token T   # history to show
    /tmp/pw/bin/python scripts/dashboard_screenshot.py http://127.0.0.1:8080 T docs/

Drives Debian's chromium (CHROMIUM, default /usr/bin/chromium): signs in
through the form like a user, saves dashboard.png, then report.png.
"""

import os
import sys

from playwright.sync_api import sync_playwright

base, token, out = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
        args=["--no-sandbox", "--disable-gpu"],
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page.goto(base + "/dashboard")
    page.get_by_label("Token or read key").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector('[data-kpi="revenue"]')
    page.screenshot(path=os.path.join(out, "dashboard.png"), full_page=True)
    page.set_extra_http_headers({"authorization": f"Bearer {token}"})
    page.goto(base + "/admin/report?format=html")
    page.screenshot(path=os.path.join(out, "report.png"), full_page=True)
    browser.close()
