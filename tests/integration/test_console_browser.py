"""The console in a real Chromium (Playwright driving Debian's `chromium`) against real services.

One stack (Redis, ingest, processor, gateway) and one browser serve the whole
module; each test opens its own page. Alerts go in through ingest as producers
send them. A screenshot of every view is written to `test-output/console/`,
and axe-core (the `axe.min.js` that `axe-playwright-python` ships) checks each
view for serious accessibility violations.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from tests.support import debian_binary

from tocsin.common.apikeys import ApiKeyStore
from tocsin.common.events import EventPublisher
from tocsin.scheduler.healthscore import compute_and_store

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "console"
# The flags a sandbox-less, offline headless Chromium needs (root, closed network).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000


class Stack:
    """The running services and what a test needs to feed them."""

    def __init__(self, gateway: str, ingest: str, redis_url: str, api_key: str) -> None:
        self.gateway = gateway
        self.ingest = ingest
        self.redis = redis.Redis.from_url(redis_url)
        self.redis_url = redis_url
        self._http = httpx.Client(headers={"authorization": f"Bearer {api_key}"}, timeout=10)

    def send(self, *alerts: dict[str, Any]) -> None:
        answer = self._http.post(f"{self.ingest}/v1/alerts", json=list(alerts))
        assert answer.status_code == 202, answer.text


@pytest.fixture(scope="module")
def stack(start_module_service: Any, module_redis_server: Any) -> Stack:
    ingest = start_module_service("ingest")
    start_module_service("processor")
    gateway = start_module_service("gateway")
    key, _ = ApiKeyStore(redis.Redis.from_url(module_redis_server.url)).create("console-tests")
    stack = Stack(gateway.url, ingest.url, module_redis_server.url, key)
    stack.send(
        {"name": "DiskFull", "severity": "critical", "service": "db", "summary": "disk 97% full",
         "labels": {"host": "db-1", "team": "storage"},
         "annotations": {"runbook_url": "https://runbooks.example/disk-full",
                         "description": "The data volume is nearly full."},
         "generator_url": "https://prometheus.example/graph?g0.expr=disk"},
        {"name": "HighLatency", "severity": "warning", "service": "web",
         "summary": "p99 over 2 s", "labels": {"host": "web-1", "team": "frontend"}},
        {"name": "CertExpiring", "severity": "info", "service": "web",
         "labels": {"host": "web-2", "team": "frontend"}},
        {"name": "ReplicaLag", "severity": "error", "service": "db",
         "labels": {"host": "db-2", "team": "storage"}},
    )  # fmt: skip
    return stack


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Playwright cannot download browsers here: it drives Debian's chromium.
    chromium = os.environ.get("TOCSIN_CHROMIUM") or debian_binary("chromium", "chromium")
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=chromium, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def open_console(browser: Any, stack: Stack, user_token: Callable[..., str]) -> Iterator[Any]:
    """Open the console as the test user (a token link), on a phone-sized page when asked."""
    contexts: list[Any] = []

    def open_page(path: str = "/", *, token: str | None = None, phone: bool = False) -> Any:
        viewport = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 800}
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        # Script errors fail the test that caused them, with the message.
        page.on("pageerror", lambda error: errors.append(str(error)))
        fragment = "" if token == "" else f"#token={token or user_token()}"
        page.goto(f"{stack.gateway}{path}{fragment}")
        if token != "":
            page.wait_for_selector("#connection[data-state=open]")
        return page

    errors: list[str] = []
    yield open_page
    for context in contexts:
        context.close()
    assert errors == [], errors


def screenshot(page: Any, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=False)


def serious_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations of impact serious or critical on the page as it stands."""
    page.add_script_tag(content=AXE)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


AXE = resources.files("axe_playwright_python").joinpath("axe.min.js").read_text()


def row(page: Any, name: str) -> Any:
    return page.locator(".row", has_text=name)


def test_login_screen_says_where_tokens_come_from_and_a_pasted_token_link_connects_in_place(
    open_console: Any, user_token: Callable[..., str]
) -> None:
    page = open_console(token="")
    login = page.locator("#login")
    login.wait_for()
    assert "tocsin dev" in login.inner_text()
    assert "identity provider" in login.inner_text()
    screenshot(page, "login")
    assert serious_violations(page) == []
    page.evaluate("window.sameDocument = true")
    page.evaluate("token => { location.hash = 'token=' + token }", user_token())
    page.wait_for_selector("#connection[data-state=open]")
    assert page.evaluate("window.sameDocument") is True, "the token was taken without a reload"
    assert "token=" not in page.url, "the token does not stay in the address bar"
    assert page.locator("#login").is_hidden()


def test_open_alerts_list_critical_first_with_counts_relative_times_and_grouping(
    open_console: Any,
) -> None:
    page = open_console()
    row(page, "CertExpiring").wait_for()
    severities = page.locator(".row .sev").all_inner_texts()
    assert [s.lower() for s in severities[:4]] == ["critical", "error", "warning", "info"]
    page.locator("#severity-counts", has_text="1 critical").wait_for()
    when = row(page, "DiskFull").locator("time")
    assert when.get_attribute("title").endswith("Z")
    assert "ago" in when.inner_text() or when.inner_text() == "just now"
    screenshot(page, "open-alerts")
    assert serious_violations(page) == []
    page.select_option("#group-by", "service")
    page.locator(".group", has_text="service: db").wait_for()
    groups = page.locator(".group").all_inner_texts()
    assert groups[0].startswith("service: db"), "the group with the critical alert comes first"
    assert "group=service" in page.url
    screenshot(page, "grouped-by-service")
    page.locator(".group", has_text="service: db").get_by_role("button").click()
    assert page.input_value("#silence-matchers") == "service=db"
    page.click("#silence-cancel")


def test_matchers_and_search_filter_the_list_and_stay_in_the_url(open_console: Any) -> None:
    page = open_console()
    row(page, "DiskFull").wait_for()
    page.fill("#matchers", 'team=storage host=~"db-.*"')
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('.row').length === 2")
    assert "label=team%3Dstorage" in page.url
    page.fill("#search", "replica")
    page.wait_for_function("document.querySelectorAll('.row').length === 1")
    assert row(page, "ReplicaLag").is_visible()
    shared = page.url
    again = open_console(shared.removeprefix(page.url.split("/?")[0]))
    again.wait_for_function("document.querySelectorAll('.row').length === 1")
    assert again.input_value("#matchers") == "team=storage host=~db-.*"
    assert again.input_value("#search") == "replica"
    page.fill("#matchers", "team=")
    page.fill("#matchers", "host=~(")
    page.click("#filters button[type=submit]")
    assert "invalid regex" in page.locator("#filter-error").inner_text()


def test_new_and_changed_alerts_arrive_live_and_are_highlighted(
    open_console: Any, stack: Stack
) -> None:
    page = open_console()
    row(page, "DiskFull").wait_for()
    stack.send({"name": "QueueBacklog", "severity": "critical", "service": "jobs"})
    arrived = row(page, "QueueBacklog")
    arrived.wait_for()
    assert "fresh" in arrived.get_attribute("class")


def test_detail_panel_shows_labels_annotations_links_timeline_and_notifications(
    open_console: Any, stack: Stack
) -> None:
    page = open_console()
    row(page, "DiskFull").click()
    detail = page.locator("#detail")
    detail.locator("h2", has_text="DiskFull").wait_for()
    runbook = detail.locator("a", has_text="runbook")
    assert runbook.get_attribute("href") == "https://runbooks.example/disk-full"
    assert detail.locator("a", has_text="generator").get_attribute("href").startswith("https://")
    assert "host\ndb-1" in detail.locator("h3:has-text('Labels') + dl").inner_text()
    assert "The data volume is nearly full." in detail.inner_text()
    timeline = detail.locator("h3:has-text('Timeline') + ol li")
    assert timeline.first.inner_text().startswith("firing")
    assert detail.locator("h3", has_text="Notifications").is_visible()
    assert detail.locator("#prediction").count() == 1, "a place for a prediction"
    alert_id = row(page, "DiskFull").get_attribute("data-id")
    EventPublisher(stack.redis).publish(
        ["alerts"],
        json.dumps({"type": "alert.predicted", "alert_id": alert_id,
                    "prediction": {"alert_id": alert_id, "episodes": 30, "enough_history": True,
                                   "min_episodes": 5, "window_seconds": 300.0,
                                   "transient_probability": 0.9, "median_seconds": 121.4,
                                   "p90_seconds": 138.2}}),
    )  # fmt: skip
    detail.locator("#prediction", has_text="30 past episodes: half ended within 2m").wait_for()
    assert "alert=" in page.url
    screenshot(page, "detail")
    assert serious_violations(page) == []


def test_ack_with_a_comment_shows_who_then_unack_and_resolve_move_the_alert(
    open_console: Any,
) -> None:
    page = open_console()
    target = row(page, "HighLatency")
    target.get_by_role("button", name="acknowledge warning HighLatency").click()
    page.fill("#comment-input", "looking at the load balancer")
    page.click("#comment-save")
    target.locator(".status", has_text="acked by tester").wait_for()
    target.click()
    detail = page.locator("#detail")
    detail.locator("li", has_text="looking at the load balancer").wait_for()
    target.get_by_role("button", name="unacknowledge warning HighLatency").click()
    page.fill("#comment-input", "handing over")
    page.click("#comment-save")
    target.locator(".status", has_text="firing").wait_for()
    detail.get_by_role("button", name="Resolve").click()
    page.fill("#comment-input", "fixed by the rollback")
    page.click("#comment-save")
    target.wait_for(state="detached")
    page.click("[data-tab=resolved]")
    row(page, "HighLatency").wait_for()
    assert "resolved by tester" in row(page, "HighLatency").inner_text()
    screenshot(page, "resolved-tab")


def test_silence_from_an_alert_is_prefilled_and_the_silences_view_expires_it(
    open_console: Any, stack: Stack
) -> None:
    page = open_console()
    row(page, "CertExpiring").get_by_role("button", name="silence info CertExpiring").click()
    prefilled = page.input_value("#silence-matchers")
    assert "alertname=CertExpiring" in prefilled
    assert "host=web-2" in prefilled
    page.select_option("#silence-duration", "14400")
    page.fill("#silence-comment", "renewal scheduled")
    screenshot(page, "silence-dialog")
    assert serious_violations(page) == []
    page.click("#silence-save")
    page.locator("#silence-dialog").wait_for(state="hidden")
    # The processor judges silences as the producer's messages come in: a repeat.
    stack.send({"name": "CertExpiring", "severity": "info", "service": "web",
                "labels": {"host": "web-2", "team": "frontend"}})  # fmt: skip
    row(page, "CertExpiring").locator(".badge", has_text="silenced").wait_for(timeout=WAIT_MS)
    page.click("[data-tab=silences]")
    listed = page.locator(".silences tbody tr", has_text="renewal scheduled")
    listed.wait_for()
    assert "active" in listed.inner_text()
    screenshot(page, "silences")
    assert serious_violations(page) == []
    listed.get_by_role("button", name="Expire").click()
    page.locator(".silences tbody tr", has_text="renewal scheduled").locator(
        "td", has_text="expired"
    ).wait_for()


def test_status_view_draws_health_components_alert_rate_analytics_and_patterns(
    open_console: Any, stack: Stack
) -> None:
    compute_and_store(stack.redis)
    today = datetime.now(UTC).date().isoformat()
    # The scheduler's jobs are plain functions: run two as it would.
    from tocsin.scheduler.analytics import run_daily_analytics
    from tocsin.scheduler.patterns import PatternRules, run_pattern_detection

    run_daily_analytics(stack.redis, int(time.time()), {"date": today}, top_n=5, batch=100)
    run_pattern_detection(stack.redis, time.time(), PatternRules(), batch=100, run_id="test")
    page = open_console("/?tab=status")
    page.fill("#analytics-date", today)
    page.click("#analytics-form button")
    page.locator("#health-chart svg").wait_for()
    assert page.locator("#rate-chart svg rect.bar").count() == 60
    page.locator("#timing-chart svg").wait_for()
    page.locator("#noisy-chart svg").wait_for()
    assert (
        "DiskFull" in page.locator("#noisy-chart").inner_html()
        or page.locator("#noisy-chart svg text").count()
    )
    page.locator("#patterns-chart svg").wait_for()
    assert "health" in page.locator("#health").inner_text()
    screenshot(page, "status")
    assert serious_violations(page) == []
    # The score on the badge follows `health.changed` events (`data.health.score`).
    EventPublisher(stack.redis).publish(
        ["system"],
        json.dumps({"type": "health.changed", "health": {
            "score": 42, "computed_at": time.time(), "window_seconds": 300, "components": []}}),
    )  # fmt: skip
    page.locator("#health", has_text="health 42").wait_for()


def test_keyboard_moves_with_j_and_k_and_acts_with_a_and_s(open_console: Any) -> None:
    page = open_console()
    row(page, "DiskFull").wait_for()
    page.locator("#list").focus()
    selected = page.locator(".row[aria-current=true]")
    current = "document.querySelector('.row[aria-current=true]')?.dataset.id"
    # Compared by id, not by position (rows the live stream adds may shift them), and
    # waited for: the virtualised list redraws the selection on the next frame.
    page.keyboard.press("j")
    selected.wait_for()
    first = selected.get_attribute("data-id")
    page.keyboard.press("j")
    page.wait_for_function(f"first => {current} && {current} !== first", arg=first, timeout=10_000)
    page.keyboard.press("k")
    page.wait_for_function(f"first => {current} === first", arg=first, timeout=10_000)
    assert selected.count() == 1
    page.keyboard.press("a")
    page.locator("#comment-dialog[open]").wait_for()
    page.keyboard.press("Escape")
    page.keyboard.press("s")
    page.locator("#silence-dialog[open]").wait_for()
    assert page.input_value("#silence-matchers").startswith("alertname=")


def test_phone_layout_fits_the_screen_and_opens_the_detail_full_width(
    open_console: Any,
) -> None:
    page = open_console(phone=True)
    row(page, "DiskFull").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "phone-list")
    assert serious_violations(page) == []
    row(page, "DiskFull").click()
    page.locator("#detail h2").wait_for()
    assert page.locator("#detail").bounding_box()["width"] >= 380
    screenshot(page, "phone-detail")


def test_a_token_link_pasted_before_expiry_renews_the_socket_in_band(
    open_console: Any, user_token: Callable[..., str]
) -> None:
    page = open_console(token=user_token(ttl=240))
    page.locator("#expiry", has_text="Token expires in").wait_for()
    connects = page.evaluate("window.tocsinConsole.client.connects")
    fresh = user_token(ttl=3600)
    page.evaluate("token => { location.hash = 'token=' + token }", fresh)
    page.wait_for_function("window.tocsinConsole.expiresAt > Date.now() / 1000 + 3000")
    page.locator("#expiry").wait_for(state="hidden")
    assert page.evaluate("window.tocsinConsole.client.connects") == connects, "no reconnect"
    assert page.locator("#connection").get_attribute("data-state") == "open"


@pytest.mark.timeout(300)  # 10,000 alerts through a real stack on a possibly busy machine
def test_ten_thousand_alerts_render_a_bounded_window_and_scroll_to_the_end(
    open_console: Any, stack: Stack
) -> None:
    batch = [{"name": f"Bulk{n:05d}", "severity": ("warning", "info")[n % 2], "service": "bulk",
              "labels": {"shard": str(n % 7)}} for n in range(10_000)]  # fmt: skip
    for start in range(0, len(batch), 1000):
        stack.send(*batch[start : start + 1000])
    page = open_console()
    page.wait_for_function(
        "[...window.tocsinConsole.alerts.values()].filter(a => a.service === 'bulk').length"
        " === 10000",
        timeout=120_000,
    )
    rows_in_dom = page.locator(".row").count()
    assert rows_in_dom < 100, rows_in_dom
    frames = page.evaluate(
        """async () => {
        const list = document.getElementById('list');
        const gaps = []; let last = performance.now();
        for (let i = 0; i < 60; i++) {
          list.scrollTop += list.scrollHeight / 60;
          await new Promise(r => requestAnimationFrame(r));
          const now = performance.now(); gaps.push(now - last); last = now;
        }
        return gaps.sort((a, b) => a - b);
    }"""
    )
    page.wait_for_timeout(100)
    assert page.locator(".row").count() < 100
    assert page.locator(".row", has_text="Bulk").count() > 0, "the end of the list rendered"
    print(f"\n10,000 alerts: frame gaps while scrolling p50 {frames[30]:.1f} ms, "
          f"max {frames[-1]:.1f} ms (shared machine)")  # fmt: skip
    screenshot(page, "ten-thousand")
