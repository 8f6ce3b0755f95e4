"""Drives Debian's chromium (headless) through the account pages with pip `playwright`.

Called by `testkit::browser`; prints one JSON object on stdout. Never `playwright install`: the
browser is /usr/bin/chromium (`deploy/scripts/ensure-browser.sh` installs both).

  drive.py verify URL                 open the verification link, click the button
  drive.py reset URL PASSWORD         open the reset link, type the new password twice, submit
  drive.py login BASE EMAIL PASSWORD  sign in with the password form of BASE/login
  drive.py provider BASE LABEL        click "Sign in with LABEL" on BASE/login and follow the flow
"""

import json
import sys

from playwright.sync_api import sync_playwright

ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 10_000


def status_of(page):
    el = page.locator("#status")
    return el.text_content() if el.is_visible() else None


def signed_in(page):
    page.locator("#who").wait_for(state="visible", timeout=TIMEOUT_MS)
    return {"who": page.locator("#who").text_content(), "url": page.url, "status": status_of(page)}


def main(argv):
    cmd = argv[0]
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        # Every CSP violation or script error fails the run (reported to the test); an API
        # answering 4xx is logged by chromium too, and is what some scenarios expect.
        def console(m):
            if m.type == "error" and "server responded with a status of 4" not in m.text:
                errors.append(m.text)

        page.on("console", console)
        page.on("pageerror", lambda e: errors.append(str(e)))
        if cmd == "verify":
            page.goto(argv[1])
            page.wait_for_load_state("networkidle")
            before = status_of(page)
            page.click("#verify")
            page.locator("#status").wait_for(state="visible")
            out = {"before": before, "status": status_of(page), "button": page.locator("#verify").is_visible()}
        elif cmd == "reset":
            page.goto(argv[1])
            page.fill("#password", argv[2])
            page.fill("#confirm", argv[2])
            page.click("#reset button[type=submit]")
            page.locator("#status").wait_for(state="visible")
            out = {"status": status_of(page)}
        elif cmd == "login":
            page.goto(argv[1] + "/login")
            page.fill("#email", argv[2])
            page.fill("#password", argv[3])
            page.click("#login button[type=submit]")
            out = signed_in(page)
        elif cmd == "provider":
            page.goto(argv[1] + "/login")
            page.click("text=Sign in with " + argv[2])
            out = signed_in(page)
        else:
            raise SystemExit("unknown command " + cmd)
        browser.close()
    out["errors"] = errors
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
