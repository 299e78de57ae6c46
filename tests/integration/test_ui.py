"""The campaign page in a real browser: headless Chromium (Debian's package) driven by Playwright,
against the stack the suite starts (gunicorn, a worker, the sandbox as Plivo)."""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bulksms.api.ui import counter_text
from bulksms.devstack.numbers_gen import us_numbers
from tests.helpers import API_KEY
from tests.helpers.stack import Stack, held_sends, wait_until

CHROMIUM = os.environ.get("BULKSMS_CHROMIUM") or next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium found: the browser tests need Debian's chromium package "
    "(apt-get install chromium, as .ci/run does) or BULKSMS_CHROMIUM naming a Chromium binary",
)
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
WAIT_MS = 90_000  # a page's state on a busy machine (polled once a second)
# Every expectation waits as long: a busy machine renders late (autofocus, for one, is applied at
# a rendering step after the load event, not by the time goto returns).
expect.set_options(timeout=WAIT_MS)
FINAL_SHOWN = ("delivered", "undelivered", "failed", "rejected")
HELD_SECONDS = 600  # a send held until the test lets it go: longer than all its waits


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    yield opened
    context.close()


def sign_in(page: Any, stack: Stack) -> None:
    page.goto(f"{stack.base_url}/")
    page.get_by_label("API key").fill(API_KEY)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()


def test_sign_in_send_to_three_numbers_and_watch_the_job_complete(stack: Stack, page: Any) -> None:
    stack.sandbox.faults.update({"undelivered_rate": 0.0, "failed_rate": 0.0})
    numbers = us_numbers(3)
    sign_in(page, stack)
    # The session is a random id only: no key in a cookie, and the cookie out of scripts' reach.
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["bulksms_session"]
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    assert API_KEY not in cookies[0]["value"] and API_KEY not in page.content()

    page.get_by_role("link", name="New job").click()
    page.get_by_label("Recipients").fill("\n".join(numbers))
    message = page.get_by_label("Message")
    message.fill("Hello from the page 😀")
    # The counter as it is typed says what the server says (UCS-2 for the emoji).
    expect(page.locator("#counter")).to_have_text(counter_text("Hello from the page 😀"))
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#preview")).to_contain_text("3 to send")
    page.get_by_role("button", name="Send", exact=True).click()

    expect(page.get_by_test_id("job-state")).to_have_text("completed", timeout=WAIT_MS)
    expect(page.get_by_test_id("count-delivered")).to_have_text("3")
    for status in ("pending", "queued", "sent", "failed", "undelivered"):
        expect(page.get_by_test_id(f"count-{status}")).to_have_text("0")
    assert sorted(m["dst"] for m in stack.sandbox.messages) == sorted(numbers)
    assert {m["text"] for m in stack.sandbox.messages} == {"Hello from the page 😀"}

    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    with open(download.value.path(), newline="") as exported:
        rows = list(csv.DictReader(exported))
    assert sorted(r["number"] for r in rows) == sorted(numbers)
    assert {r["status"] for r in rows} == {"delivered"}


def test_a_form_sent_twice_makes_one_job(stack: Stack, page: Any) -> None:
    """Each rendered form carries its own Idempotency-Key: a double click, or the form sent
    again after a dropped answer, makes one job."""
    sign_in(page, stack)
    page.goto(f"{stack.base_url}/ui/send")
    form = {
        name: page.locator(f"#send-form input[name={name}]").get_attribute("value")
        for name in ("csrf_token", "idempotency_key")
    }
    form.update(recipients="\n".join(us_numbers(2)), message="once", action="send")
    first = page.request.post(f"{stack.base_url}/ui/send", multipart=form, max_redirects=0)
    again = page.request.post(f"{stack.base_url}/ui/send", multipart=form, max_redirects=0)
    assert first.status == again.status == 303
    assert first.headers["location"] == again.headers["location"]
    jobs = requests.get(
        f"{stack.base_url}/api/bulk-sms", headers={"X-API-Key": API_KEY}, timeout=30
    ).json()["jobs"]
    assert len(jobs) == 1


# The send is held until the test lets it go (a busy browser's sign-in may outlast any fixed
# hold), and answered then, not timed out.
@pytest.mark.parametrize("stack_overrides", [{"plivo_timeout": HELD_SECONDS + 60}])
def test_pause_resume_and_cancel_from_the_page(stack: Stack, page: Any) -> None:
    numbers = us_numbers(4000)
    with held_sends(stack.sandbox, HELD_SECONDS) as release:
        job_id = stack.submit({"recipients": numbers, "message": "steady"}).json()["job_id"]
        wait_until(lambda: len(stack.sandbox.sends) >= 1, what="a send in flight")
        sign_in(page, stack)
        page.goto(f"{stack.base_url}/ui/jobs/{job_id}")
        page.get_by_role("button", name="Pause").click()
        release.set()
        expect(page.get_by_test_id("job-state")).to_have_text("paused", timeout=WAIT_MS)
    sent = len(stack.sandbox.sends)
    wait_until(lambda: stack.queue_depth() == 0, what="the queued tasks taken while paused")
    assert len(stack.sandbox.sends) == sent  # nothing sent while paused
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_test_id("job-state")).to_have_text("completed", timeout=WAIT_MS)
    assert stack.sent_numbers() == sorted(numbers)

    # A scheduled job, cancelled after a confirmation.
    scheduled = stack.submit(
        {"recipients": us_numbers(5), "message": "later", "send_at": _in_a_day()}
    ).json()["job_id"]
    page.goto(f"{stack.base_url}/ui/jobs/{scheduled}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_test_id("job-state")).to_have_text("cancelled", timeout=WAIT_MS)
    expect(page.get_by_test_id("count-cancelled")).to_have_text("5")


@pytest.mark.parametrize("stack_overrides", [{"plivo_timeout": HELD_SECONDS + 60}])
def test_a_cancelled_jobs_page_follows_its_batch_in_flight(stack: Stack, page: Any) -> None:
    """A cancelled job's counts still move (a batch in flight finishes and is counted, waiting
    batches are cancelled when claimed): its page keeps reading them until nothing can change."""
    numbers = us_numbers(5)
    with held_sends(stack.sandbox, HELD_SECONDS) as release:  # (past every wait below)
        before = len(stack.sandbox.sends)
        job_id = stack.submit({"recipients": numbers, "message": "in flight"}).json()["job_id"]
        wait_until(lambda: len(stack.sandbox.sends) > before, what="the job's send in flight")
        sign_in(page, stack)
        page.goto(f"{stack.base_url}/ui/jobs/{job_id}")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Cancel").click()
        expect(page.get_by_test_id("job-state")).to_have_text("cancelled")
        expect(page.get_by_test_id("count-delivered")).to_have_text("0")
        release.set()

    def reported() -> int:  # (the sandbox fails some numbers: every report counts)
        shown = [page.get_by_test_id(f"count-{s}").text_content() for s in FINAL_SHOWN]
        return sum(int(text or 0) for text in shown)

    expect(page.locator("#batches")).to_have_text("1 of 1 sent")
    wait_until(lambda: reported() == len(numbers), what="every report shown on the page")
    expect(page.get_by_test_id("job-state")).to_have_text("cancelled")


def _in_a_day() -> str:
    import datetime as dt

    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()


def test_hostile_text_is_shown_as_text(stack: Stack, page: Any) -> None:
    hostile = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
    (number,) = us_numbers(1)
    answer = stack.submit(
        {"message": "Hi {{name}}", "recipients": [{"to": number, "fields": {"name": hostile}}]}
    )
    job_id = answer.json()["job_id"]
    sign_in(page, stack)
    page.goto(f"{stack.base_url}/ui/jobs/{job_id}")
    expect(page.locator("#recipients tbody")).to_contain_text(hostile)
    # An entry that is not a number, in the form's preview: listed, as text.
    page.goto(f"{stack.base_url}/ui/send")
    entry = "<img src=x onerror=window.pwned=3>"  # (an answer shows 64 characters of one)
    page.get_by_label("Recipients").fill(f"{number}\n{entry}")
    page.get_by_label("Message").fill("hi")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#preview")).to_contain_text(f"row 2: {entry}")
    assert page.evaluate("window.pwned") is None


def test_a_request_without_the_csrf_token_is_refused(stack: Stack, page: Any) -> None:
    job_id = stack.submit(
        {"recipients": us_numbers(2), "message": "x", "send_at": _in_a_day()}
    ).json()["job_id"]
    # No session at all: the form's target sends the browser to sign in, and nothing changes.
    refused = page.request.post(f"{stack.base_url}/ui/jobs/{job_id}/cancel", max_redirects=0)
    assert refused.status == 302 and refused.headers["location"].endswith("/ui/signin")
    sign_in(page, stack)
    # Signed in, but without the token: refused, by the page's forms and by the API alike.
    refused = page.request.post(f"{stack.base_url}/ui/jobs/{job_id}/cancel", form={"x": "1"})
    assert refused.status == 403
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    wrong = page.request.post(
        f"{stack.base_url}/ui/jobs/{job_id}/cancel", form={"csrf_token": token[::-1]}
    )
    assert wrong.status == 403
    api = page.request.post(f"{stack.base_url}/api/bulk-sms/{job_id}/cancel")
    assert api.status == 403 and api.json()["error"] == "csrf_failed"
    assert stack.status(job_id)["state"] == "scheduled"
    # With it, the same request goes through.
    done = page.request.post(
        f"{stack.base_url}/api/bulk-sms/{job_id}/cancel", headers={"X-CSRF-Token": token}
    )
    assert done.status == 200 and done.json()["state"] == "cancelled"
    # Signed out: the session is gone on the server, whatever the browser kept.
    page.goto(f"{stack.base_url}/ui/")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    gone = page.request.get(f"{stack.base_url}/api/bulk-sms/{job_id}")
    assert gone.status == 401


def test_the_page_reads_at_a_phones_width_and_by_keyboard(stack: Stack, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    try:
        page.goto(f"{stack.base_url}/ui/signin")
        expect(page.get_by_label("API key")).to_be_focused()  # (autofocus)
        page.keyboard.type(API_KEY)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"the page scrolls sideways at a phone's width ({width} px)"
        assert re.search(r"/ui/$", page.url)
    finally:
        context.close()
