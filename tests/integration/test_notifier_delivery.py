"""The notifier against real receivers: HTTP servers, an SMTP server, real Redis and processes.

Notifications are enqueued here as the processor would (a `deliver_notification`
message per transition), so these tests do not depend on the processor.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis
from tests.support import metric, wait_until

from tocsin.common import broker as queues
from tocsin.common.models import NotificationRequest, StoredAlert
from tocsin.notifier.receivers.webhook import SIGNATURE_HEADER, verify
from tocsin.notifier.tools import dlq_list

pytestmark = pytest.mark.integration

SECRET = "webhook-signing-secret"
FAST = {
    "TOCSIN_RETRY_MIN_BACKOFF_MS": "50",
    "TOCSIN_RETRY_MAX_BACKOFF_MS": "200",
    "TOCSIN_SEND_TIMEOUT_SECONDS": "2",
    "TOCSIN_ROUTES_POLL_SECONDS": "0.2",
}


@dataclass
class Arrival:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server standing in for a webhook, Slack, Teams or PagerDuty endpoint.

    `answers` is consumed one per request: a status code, or (status, headers);
    when it runs out every request gets 200. `hold` delays each answer.
    """

    answers: list[Any] = field(default_factory=list)
    hold: float = 0.0
    arrivals: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the sender died mid-request: nothing was delivered
                with owner.lock:
                    owner.arrivals.append(
                        Arrival(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    answer = owner.answers.pop(0) if owner.answers else 200
                if owner.hold:
                    time.sleep(owner.hold)
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Arrival]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.arrivals) >= count:
                    return list(self.arrivals)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} arrivals, got {len(self.arrivals)}")


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


def alert(name: str, fingerprint: str, **labels: str) -> StoredAlert:
    return StoredAlert(
        id=f"id-{fingerprint}",
        fingerprint=fingerprint,
        name=name,
        severity="critical",
        status="firing",
        source="tests",
        service=labels.pop("service", "checkout"),
        summary=f"{name} summary",
        labels=labels,
        annotations={},
        producer="tests",
        count=1,
        first_seen="2026-01-01T00:00:00Z",
        last_seen="2026-01-01T00:00:00Z",
    )


class Enqueuer:
    """Enqueues `deliver_notification` messages the way the processor does."""

    def __init__(self, redis_url: str) -> None:
        self.broker = queues.build_broker(redis_url, queues=(queues.NOTIFICATIONS_QUEUE,))

    def transition(self, stored: StoredAlert, transition: str = "firing") -> None:
        request = NotificationRequest(
            id=f"{stored.id}:{transition}:{time.time_ns()}",
            transition=transition,  # type: ignore[arg-type]
            alert=stored,
            at=time.time(),
        )
        self.broker.enqueue(
            queues.build_message(
                queues.NOTIFICATIONS_QUEUE,
                queues.DELIVER_NOTIFICATION_ACTOR,
                (msgspec.to_builtins(request),),
            )
        )


def self_signed_certificate(tmp_path: Path) -> str:
    """A PEM with a key and a self-signed certificate for 127.0.0.1 (it is its own CA)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "smtp.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + certificate.public_bytes(serialization.Encoding.PEM)
    )
    return str(path)


def routes_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return str(path)


def test_webhook_gets_one_signed_notification_in_the_documented_format(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path
) -> None:
    hook = receivers()
    routes = routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 200ms
  group_interval: 1h
receivers:
  - name: hook
    type: webhook
    url: {hook.url}
    secret: {SECRET}
    headers: {{X-Team: payments}}
""",
    )
    start_service("notifier", TOCSIN_ROUTES_FILE=routes, **FAST)
    Enqueuer(redis_server.url).transition(alert("DiskFull", "fp-1", team="payments"))
    [arrival] = hook.wait_for(1)
    assert verify(SECRET, arrival.body, arrival.headers[SIGNATURE_HEADER.lower()])
    assert not verify("another-secret", arrival.body, arrival.headers[SIGNATURE_HEADER.lower()])
    assert arrival.headers["x-team"] == "payments"
    body = arrival.json()
    assert body["status"] == "firing"
    assert body["group_labels"] == {"alertname": "DiskFull"}
    assert body["alerts"][0]["alert"]["fingerprint"] == "fp-1"
    assert arrival.headers["x-tocsin-notification-id"] == body["id"]
    time.sleep(0.5)
    assert len(hook.arrivals) == 1


def test_500_then_200_is_delivered_after_a_retry_and_400_fails_once_permanently(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path
) -> None:
    flaky = receivers(answers=[500, (503, {"Retry-After": "0"})])
    refusing = receivers(answers=[400, 400, 400])
    routes = routes_file(
        tmp_path,
        f"""
route:
  receiver: flaky
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1h
  routes:
    - matchers: ['case="refusing"']
      receiver: refusing
receivers:
  - {{name: flaky, type: webhook, url: "{flaky.url}"}}
  - {{name: refusing, type: webhook, url: "{refusing.url}"}}
""",
    )
    notifier = start_service("notifier", TOCSIN_ROUTES_FILE=routes, **FAST)
    enqueue = Enqueuer(redis_server.url)
    enqueue.transition(alert("Flaky", "fp-flaky", case="flaky"))
    enqueue.transition(alert("Refused", "fp-refused", case="refusing"))
    arrivals = flaky.wait_for(3)
    assert len({a.json()["id"] for a in arrivals}) == 1  # the same notification, retried
    refusing.wait_for(1)
    wait_until(
        lambda: metric(notifier.url, "tocsin_notifier_failed_total", kind="permanent") == 1,
        what="the permanent failure to be counted",
    )
    time.sleep(0.5)  # room for a wrong retry to show up
    assert len(refusing.arrivals) == 1
    assert len(flaky.arrivals) == 3
    assert metric(notifier.url, "tocsin_notifier_failed_total", kind="temporary") == 2
    purged = subprocess.run(
        [sys.executable, "-m", "tocsin.client", "dlq", "purge", "--all"],
        env={**os.environ, "REDIS_URL": redis_server.url},
        capture_output=True,
        text=True,
        check=True,
    )
    assert purged.stdout.strip() == "purged 1"  # the 400's permanent failure
    assert metric(notifier.url, "tocsin_notifier_sent_total") == 1
    log = redis.Redis.from_url(redis_server.url).lrange("tocsin:notify:alertlog:id-fp-flaky", 0, -1)
    outcomes = [json.loads(entry)["outcome"] for entry in log]
    assert outcomes == ["sent", "failed-temporary", "failed-temporary"]


def test_receiver_down_past_all_retries_is_dead_lettered_and_dlq_retry_delivers_it(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path
) -> None:
    hook = receivers(answers=[502] * 1000)
    routes = routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_wait: 100ms
  group_interval: 1h
receivers:
  - {{name: hook, type: webhook, url: "{hook.url}"}}
""",
    )
    notifier = start_service(
        "notifier", TOCSIN_ROUTES_FILE=routes, TOCSIN_RETRY_BUDGET_SECONDS="1", **FAST
    )
    Enqueuer(redis_server.url).transition(alert("Down", "fp-down"))
    wait_until(
        lambda: metric(notifier.url, "tocsin_notifier_dead_lettered_total") == 1,
        what="the dead letter",
    )
    tried = len(hook.arrivals)
    assert tried >= 3  # retried with backoff for the whole budget, then dead-lettered
    cli = [sys.executable, "-m", "tocsin.client", "dlq"]
    env = {**os.environ, "REDIS_URL": redis_server.url}
    listing = subprocess.run(
        [*cli, "list", "--json"], env=env, capture_output=True, text=True, check=True
    )
    [letter] = json.loads(listing.stdout)
    assert letter["reason"] == "retries-exhausted"
    assert letter["receiver"] == "hook"
    # The receiver is back (answers 200 from now on): retry delivers it, once.
    with hook.lock:
        hook.answers.clear()
    subprocess.run([*cli, "retry", letter["id"]], env=env, check=True, capture_output=True)
    arrivals = hook.wait_for(tried + 1)
    assert arrivals[-1].json()["id"] == letter["id"]
    assert dlq_list(redis_server.url) == []
    time.sleep(0.5)
    assert len(hook.arrivals) == tried + 1


def test_slack_teams_email_over_starttls_and_pagerduty_receivers_each_get_their_format(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path
) -> None:
    from aiosmtpd.controller import Controller

    from tocsin.client.devserver import free_port

    class Mailbox:
        def __init__(self) -> None:
            self.messages: list[Any] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            self.messages.append(envelope)
            return "250 OK"

    from aiosmtpd.smtp import AuthResult, LoginPassword

    logins: list[tuple[bytes, bytes]] = []

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"mail-password")

    cert_path = self_signed_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_path)
    mailbox = Mailbox()
    # STARTTLS is required before AUTH and MAIL, as on a real submission port.
    smtp = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticator,
        tls_context=server_tls,
        require_starttls=True,
    )
    smtp.start()
    slack, teams, pagerduty = receivers(), receivers(), receivers(answers=[202, 202])
    routes = routes_file(
        tmp_path,
        f"""
route:
  receiver: slack
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 300ms
  routes:
    - {{receiver: slack, continue: true}}
    - {{receiver: teams, continue: true}}
    - {{receiver: mail, continue: true}}
    - {{receiver: pager}}
receivers:
  - {{name: slack, type: slack, url: "{slack.url}", channel: "#oncall"}}
  - {{name: teams, type: msteams, url: "{teams.url}"}}
  - name: mail
    type: email
    host: 127.0.0.1
    port: {smtp.port}
    tls: starttls
    ca_file: {cert_path}
    username: tocsin
    password: mail-password
    from: tocsin@example.test
    to: [oncall@example.test]
  - {{name: pager, type: pagerduty, url: "{pagerduty.url}", routing_key: rk-123}}
""",
    )
    try:
        start_service("notifier", TOCSIN_ROUTES_FILE=routes, **FAST)
        enqueue = Enqueuer(redis_server.url)
        enqueue.transition(alert("CheckoutDown", "fp-co"))
        [slack_message] = slack.wait_for(1)
        payload = slack_message.json()
        assert payload["channel"] == "#oncall"
        assert "CheckoutDown" in payload["text"]
        assert [b["type"] for b in payload["blocks"]] == ["header", "section"]
        [card] = teams.wait_for(1)
        content = card.json()["attachments"][0]["content"]
        assert content["type"] == "AdaptiveCard"
        assert "CheckoutDown" in content["body"][1]["text"]
        [trigger] = pagerduty.wait_for(1)
        event = trigger.json()
        assert (event["event_action"], event["dedup_key"], event["routing_key"]) == (
            "trigger",
            "fp-co",
            "rk-123",
        )
        wait_until(lambda: len(mailbox.messages) == 1, what="the email")
        raw = mailbox.messages[0].content.decode()
        assert "multipart/alternative" in raw
        assert "text/html" in raw
        assert "CheckoutDown" in raw
        assert logins == [(b"tocsin", b"mail-password")]
        # Resolving sends PagerDuty a resolve for the same dedup key.
        enqueue.transition(alert("CheckoutDown", "fp-co"), "resolved")
        resolve = pagerduty.wait_for(2)[1].json()
        assert (resolve["event_action"], resolve["dedup_key"]) == ("resolve", "fp-co")
    finally:
        smtp.stop()


def test_two_hundred_alerts_of_one_group_inside_group_wait_become_one_digest(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path
) -> None:
    hook = receivers()
    routes = routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_by: [service]
  group_wait: 3s
  group_interval: 1h
receivers:
  - {{name: hook, type: webhook, url: "{hook.url}"}}
""",
    )
    enqueue = Enqueuer(redis_server.url)
    # Enqueued before the notifier starts, so all 200 are inside group_wait however slow
    # the machine is.
    for index in range(200):
        enqueue.transition(alert(f"Storm{index}", f"fp-storm-{index}", service="api"))
    start_service(
        "notifier",
        TOCSIN_ROUTES_FILE=routes,
        TOCSIN_DIGEST_THRESHOLD="20",
        TOCSIN_DIGEST_SAMPLE="5",
        **FAST,
    )
    [arrival] = hook.wait_for(1)
    body = arrival.json()
    assert body["truncated"] is True
    assert (body["firing_count"], body["resolved_count"]) == (200, 0)
    assert len(body["alerts"]) == 5
    assert len(body["alert_ids"]) == 200
    time.sleep(0.5)
    assert len(hook.arrivals) == 1


def test_two_notifier_replicas_and_a_sigkill_mid_send_lose_no_notification(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path
) -> None:
    hook = receivers(hold=0.8)
    routes = routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1h
receivers:
  - {{name: hook, type: webhook, url: "{hook.url}"}}
""",
    )
    env = {
        **FAST,
        "TOCSIN_ROUTES_FILE": routes,
        "TOCSIN_SEND_TIMEOUT_SECONDS": "5",
        "TOCSIN_CLAIM_LEASE_SECONDS": "3",
        "TOCSIN_QUEUE_HEARTBEAT_TIMEOUT_MS": "2000",
        "TOCSIN_SEND_THREADS": "4",
    }
    doomed = start_service("notifier", **env)
    survivor = start_service("notifier", **env)
    enqueue = Enqueuer(redis_server.url)
    groups = 24
    for index in range(groups):
        enqueue.transition(alert(f"Replica{index}", f"fp-replica-{index}"))
    hook.wait_for(3)
    doomed.process.send_signal(signal.SIGKILL)
    doomed.process.wait()

    def delivered() -> set[str]:
        return {a.json()["group_labels"]["alertname"] for a in list(hook.arrivals)}

    wait_until(lambda: len(delivered()) == groups, timeout=60, what="every group delivered")
    time.sleep(1.0)  # room for a duplicate to show up
    arrivals = list(hook.arrivals)
    ids_per_group: dict[str, set[str]] = {}
    for arrival in arrivals:
        body = arrival.json()
        ids_per_group.setdefault(body["group_labels"]["alertname"], set()).add(body["id"])
    # One notification per group, whichever replica sent it: the claim stops the second.
    print(f"{len(arrivals)} arrivals on the wire for {groups} notifications")
    assert all(len(ids) == 1 for ids in ids_per_group.values())
    # Only a send that was on the wire when its process died can arrive twice (same id,
    # which the receiver can drop): at most one per send slot of the receiver (4) in the
    # killed process, whose guards send them again once their leases lapse.
    assert len(arrivals) - groups <= 4
    assert survivor.process.poll() is None


def test_alert_posted_to_ingest_is_notified_and_pagerduty_out_is_accepted_by_tocsin_ingest(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path, user_token: Any
) -> None:
    from tocsin.common.apikeys import ApiKeyStore

    store = ApiKeyStore(redis.Redis.from_url(redis_server.url))
    producer_key, _ = store.create("e2e")
    loop_key, _ = store.create("pagerduty-loop")
    hook = receivers()
    ingest = start_service("ingest")
    start_service("processor")
    routes = routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1h
  routes:
    - matchers: [forward=pd]
      receiver: pager
      continue: true
    - receiver: hook
receivers:
  - {{name: hook, type: webhook, url: "{hook.url}"}}
  - {{name: pager, type: pagerduty, url: "{ingest.url}/v2/enqueue", routing_key: "{loop_key}"}}
""",
    )
    notifier = start_service("notifier", TOCSIN_ROUTES_FILE=routes, **FAST)
    posted = httpx.post(
        f"{ingest.url}/v1/alerts",
        headers={"authorization": f"Bearer {producer_key}"},
        json={
            "name": "EndToEnd",
            "severity": "critical",
            "service": "web",
            "labels": {"forward": "pd"},
        },
        timeout=10,
    )
    assert posted.status_code == 202, posted.text
    [accepted] = posted.json()["accepted"]
    [arrival] = hook.wait_for(1)
    body = arrival.json()
    assert body["alerts"][0]["alert"]["id"] == accepted["id"]
    # The PagerDuty receiver's Events API v2 trigger was accepted by Tocsin's own ingest.
    wait_until(
        lambda: metric(notifier.url, "tocsin_notifier_sent_total", receiver_type="pagerduty") == 1,
        what="the PagerDuty event to be accepted",
    )
    assert metric(notifier.url, "tocsin_notifier_failed_total") == 0
    log = redis.Redis.from_url(redis_server.url).lrange(
        f"tocsin:notify:alertlog:{accepted['id']}", 0, -1
    )
    assert sorted(json.loads(e)["receiver"] for e in log) == ["hook", "pager"]
    # The dashboard API shows an alert's notifications beside its timeline.
    gateway = start_service("gateway")
    shown = httpx.get(
        f"{gateway.url}/v1/alerts/{accepted['id']}",
        headers={"authorization": f"Bearer {user_token()}"},
        timeout=10,
    )
    assert shown.status_code == 200, shown.text
    assert sorted(n["receiver"] for n in shown.json()["notifications"]) == ["hook", "pager"]


def test_unchanged_group_repeats_after_repeat_interval_and_resolution_is_notified(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path
) -> None:
    hook = receivers()
    routes = routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 300ms
  repeat_interval: 1s
receivers:
  - {{name: hook, type: webhook, url: "{hook.url}"}}
""",
    )
    start_service("notifier", TOCSIN_ROUTES_FILE=routes, **FAST)
    enqueue = Enqueuer(redis_server.url)
    firing = alert("Repeating", "fp-repeat")
    enqueue.transition(firing)
    first, repeat = (a.json() for a in hook.wait_for(2))
    assert (first["repeat"], repeat["repeat"]) == (False, True)
    assert repeat["created_at"] - first["created_at"] >= 1.0  # never before repeat_interval
    enqueue.transition(firing, "resolved")
    wait_until(
        lambda: any(a.json()["status"] == "resolved" for a in list(hook.arrivals)),
        what="the resolved notification",
    )
    resolved = next(a.json() for a in hook.arrivals if a.json()["status"] == "resolved")
    assert (resolved["firing_count"], resolved["resolved_count"]) == (0, 1)
    count = len(hook.arrivals)
    time.sleep(1.2)  # past repeat_interval: a resolved group does not repeat
    assert len(hook.arrivals) == count


def test_sigterm_lets_the_in_flight_send_finish_before_the_process_exits(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path
) -> None:
    hook = receivers(hold=1.0)
    routes = routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_wait: 100ms
  group_interval: 1h
receivers:
  - {{name: hook, type: webhook, url: "{hook.url}"}}
""",
    )
    notifier = start_service(
        "notifier",
        TOCSIN_ROUTES_FILE=routes,
        TOCSIN_SHUTDOWN_TIMEOUT_SECONDS="20",
        # Well beyond the receiver's 1 s hold: a pause of this process (the receiver's)
        # must not turn the in-flight send into a timed-out one.
        **(FAST | {"TOCSIN_SEND_TIMEOUT_SECONDS": "10"}),
    )
    Enqueuer(redis_server.url).transition(alert("Draining", "fp-drain"))
    hook.wait_for(1)  # the send is on the wire; the receiver answers a second later
    notifier.signal(signal.SIGTERM)
    assert notifier.process.wait(30) == 0
    log = redis.Redis.from_url(redis_server.url).lrange("tocsin:notify:alertlog:id-fp-drain", 0, -1)
    assert [json.loads(entry)["outcome"] for entry in log] == ["sent"]
