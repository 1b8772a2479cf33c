"""Routing-side behaviour of the notifier with real processes: reload, inhibition, rate
limits, the shared claim, `tocsin routes test`, and the gateway's template preview."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from tests.integration import test_notifier_delivery as support
from tests.integration.test_notifier_delivery import FAST, Enqueuer, alert, routes_file
from tests.support import metric, start_previewing_gateway, wait_until

pytestmark = pytest.mark.integration

# The real HTTP receivers fixture, shared with the delivery tests.
receivers = support.receivers


def test_routing_file_change_is_picked_up_without_restart_and_a_bad_one_is_refused(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path
) -> None:
    first, second = receivers(), receivers()
    template = """
route:
  receiver: {name}
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1h
receivers:
  - {{name: first, type: webhook, url: "{first}"}}
  - {{name: second, type: webhook, url: "{second}"}}
"""
    path = routes_file(tmp_path, template.format(name="first", first=first.url, second=second.url))
    notifier = start_service("notifier", TOCSIN_ROUTES_FILE=path, **FAST)
    enqueue = Enqueuer(redis_server.url)
    enqueue.transition(alert("Before", "fp-before"))
    first.wait_for(1)
    Path(path).write_text(template.format(name="second", first=first.url, second=second.url))
    time.sleep(0.5)  # past the poll interval, so the change is seen
    enqueue.transition(alert("After", "fp-after"))
    second.wait_for(1)
    # A broken file is refused and the routing in force stays.
    Path(path).write_text("route:\n  receiver: nobody\n")
    time.sleep(0.5)
    enqueue.transition(alert("StillRouted", "fp-still"))
    assert second.wait_for(2)[1].json()["group_labels"] == {"alertname": "StillRouted"}
    assert "routing reload refused" in notifier.log()
    assert "unknown receiver 'nobody'" in notifier.log()


def test_inhibition_mutes_a_warning_while_its_critical_source_fires(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path
) -> None:
    hook = receivers()
    path = routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_by: [alertname, service]
  group_wait: 100ms
  group_interval: 300ms
receivers:
  - {{name: hook, type: webhook, url: "{hook.url}"}}
inhibit_rules:
  - source_matchers: [severity=critical]
    target_matchers: [severity=warning]
    equal: [service]
""",
    )
    start_service("notifier", TOCSIN_ROUTES_FILE=path, **FAST)
    enqueue = Enqueuer(redis_server.url)
    source = alert("DatabaseDown", "fp-db", service="orders")
    target = alert("SlowQueries", "fp-slow", service="orders")
    target.severity = "warning"
    enqueue.transition(source)
    hook.wait_for(1)
    enqueue.transition(target)
    time.sleep(1.0)  # several group intervals: the target stays muted
    assert [a.json()["group_labels"]["alertname"] for a in hook.arrivals] == ["DatabaseDown"]
    enqueue.transition(source, "resolved")
    arrivals = hook.wait_for(3)
    names = sorted(a.json()["group_labels"]["alertname"] for a in arrivals[1:])
    assert names == ["DatabaseDown", "SlowQueries"]


def test_rate_limited_receiver_gets_every_notification_later_none_dropped(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path
) -> None:
    hook = receivers()
    path = routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1h
receivers:
  - {{name: hook, type: webhook, url: "{hook.url}", rate_limit: 2/s}}
""",
    )
    notifier = start_service("notifier", TOCSIN_ROUTES_FILE=path, **FAST)
    enqueue = Enqueuer(redis_server.url)
    for index in range(6):
        enqueue.transition(alert(f"Limited{index}", f"fp-limited-{index}"))
    arrivals = hook.wait_for(6)
    assert len({a.json()["group_labels"]["alertname"] for a in arrivals}) == 6
    assert metric(notifier.url, "tocsin_notifier_rate_limited_total") >= 1


def test_notification_claim_is_taken_once_across_replicas_and_lapses_after_a_crash(
    redis_server: Any,
) -> None:
    from tocsin.notifier.message import Notification
    from tocsin.notifier.notificationlog import NotificationLog

    client = redis.Redis.from_url(redis_server.url)
    log = NotificationLog(client, lease=0.3, retention=60, keep_claims=60)

    def notification(token: str) -> Notification:
        return Notification(
            id=token,
            receiver="hook",
            receiver_type="webhook",
            group_key="g1",
            group_labels={},
            state_hash="s1",
            status="firing",
            alerts=[],
            firing_count=0,
            resolved_count=0,
            truncated=False,
            created_at=0.0,
        )

    first, second = notification("token-a"), notification("token-b")
    assert log.claim(first).acquired
    busy = log.claim(second)
    assert busy.state == "busy"
    assert 0 < busy.wait <= 0.3
    # The first sender died without settling: once its lease lapses, the next one takes it.
    wait_until(lambda: log.claim(second).acquired, timeout=10, what="the lease to lapse")
    log.settle(second, "sent")
    assert log.claim(first).state == "sent"
    assert log.claim(second).state == "sent"


def test_a_claim_that_redis_runs_twice_is_acquired_both_times_and_busy_for_another_call(
    redis_server: Any,
) -> None:
    # Redis frozen past the client's 5 s socket timeout: redis-py sends the claim again,
    # and after the thaw Redis runs both, in either order. When the first runs first, the
    # second (whose answer is the one that arrives) must not find the claim "busy":
    # nothing would send the page until the lease lapsed and the guard ran (15 s later by
    # default). Both runs carry the call's guard; run twice here in that order.
    from tocsin.common.queue.due import due_keys
    from tocsin.notifier.message import Notification
    from tocsin.notifier.notificationlog import Guard, NotificationLog

    client = redis.Redis.from_url(redis_server.url)
    log = NotificationLog(client, lease=60, retention=60, keep_claims=60)
    notification = Notification(
        id="token-twice", receiver="hook", receiver_type="webhook", group_key="g1",
        group_labels={}, state_hash="s1", status="firing", alerts=[], firing_count=0,
        resolved_count=0, truncated=False, created_at=0.0,
    )  # fmt: skip

    def guard(message_id: str) -> Guard:
        return Guard(due_keys("notify-test"), message_id, b"{}", 0.5)

    assert log.claim(notification, guard=guard("call-1")).state == "acquired"
    assert log.claim(notification, guard=guard("call-1")).state == "acquired"
    # A redelivered copy of the message is another call: it finds the claim held.
    assert log.claim(notification, guard=guard("call-2")).state == "busy"
    assert client.zcard(due_keys("notify-test").entries) == 2  # each call's guard, once


def test_routes_test_command_prints_the_receivers_an_alert_reaches(tmp_path: Path) -> None:
    path = routes_file(
        tmp_path,
        """
route:
  receiver: default
  routes:
    - matchers: ['severity=~"critical|error"']
      receiver: pager
      continue: true
    - matchers: ['team="db"']
      receiver: db-chat
receivers:
  - {name: default, type: webhook, url: "http://127.0.0.1:9/"}
  - {name: pager, type: pagerduty, routing_key: rk}
  - {name: db-chat, type: slack, url: "http://127.0.0.1:9/"}
""",
    )
    cli = [sys.executable, "-m", "tocsin.client", "routes", "test", "--file", path]
    out = subprocess.run(
        [*cli, "--labels", "severity=critical", "team=db"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [line.split()[0] for line in out.splitlines()] == ["pager", "db-chat"]
    out = subprocess.run(
        [*cli, "--labels", "severity=info", "--json"], capture_output=True, text=True, check=True
    ).stdout
    assert [r["receiver"] for r in json.loads(out)] == ["default"]
    broken = (
        Path(path)
        .read_text()
        .replace("receiver: default", "receiver: default\n  group_wait: soon", 1)
    )
    Path(path).write_text(broken)
    failed = subprocess.run(
        [*cli, "--labels", "a=b"], capture_output=True, text=True, env={**os.environ}
    )
    assert failed.returncode == 2
    # The file starts with a blank line: `group_wait: soon` is on line 4.
    assert "routes.yaml:4: group_wait: not a duration" in failed.stderr


def test_gateway_previews_a_template_against_a_sample_alert(
    start_service: Any, user_token: Any
) -> None:
    gateway = start_previewing_gateway(start_service)
    headers = {"authorization": f"Bearer {user_token()}"}
    url = f"{gateway.url}/v1/notifications/preview"
    answer = httpx.post(
        url,
        headers=headers,
        timeout=10,
        json={
            "receiver_type": "slack",
            "templates": {"title": "{{ alerts[0].alert.name }} on {{ alerts[0].alert.service }}"},
            "alert": {"name": "QueueBacklog", "service": "billing"},
        },
    )
    assert answer.status_code == 200, answer.text
    payload = answer.json()["rendered"]["payload"]
    assert payload["blocks"][0]["text"]["text"] == "QueueBacklog on billing"
    broken = httpx.post(
        url,
        headers=headers,
        timeout=10,
        json={
            "receiver_type": "email",
            "templates": {"subject": "{{ unclosed"},
        },
    )
    assert broken.status_code == 422
    assert broken.headers["content-type"] == "application/problem+json"
    refused = httpx.post(url, timeout=10, json={"receiver_type": "slack"})
    assert refused.status_code == 401


def test_an_older_transition_taken_late_does_not_overwrite_a_newer_one(
    redis_server: Any,
) -> None:
    from tocsin.common.queue.due import DueTimes
    from tocsin.notifier.grouping import Groups, GroupTimers, Handoff
    from tocsin.notifier.message import GroupedAlert

    client = redis.Redis.from_url(redis_server.url)
    due = DueTimes(client, "notifications")
    groups = Groups(client, due)
    stored = alert("OutOfOrder", "fp-order")
    resolved = GroupedAlert(transition="resolved", status="resolved", alert=stored, at=200.0)
    firing = GroupedAlert(transition="firing", status="firing", alert=stored, at=100.0)
    timers = GroupTimers(group_wait=30, group_interval=60)
    scheduled, _ = groups.add("g-order", resolved, timers, Handoff("flush-1", b"{}"), 0.0)
    assert scheduled
    # A worker thread took the firing late.
    again, _ = groups.add("g-order", firing, timers, Handoff("flush-2", b"{}"), 0.0)
    assert not again
    assert due.pending() == 1  # the one flush the first add scheduled
    assert groups.read("g-order", "flush-1").alerts["fp-order"].status == "resolved"


def test_message_delivered_more_than_max_deliveries_is_dead_lettered_not_processed(
    redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path
) -> None:
    from tocsin.common import broker as queues
    from tocsin.notifier.tools import dlq_list

    hook = receivers()
    path = routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_wait: 100ms
receivers:
  - {{name: hook, type: webhook, url: "{hook.url}"}}
""",
    )
    enqueue = Enqueuer(redis_server.url)
    enqueue.transition(alert("CrashLoop", "fp-crash"))
    client = redis.Redis.from_url(redis_server.url)
    [raw] = client.hvals("tocsin:dramatiq:notifications.msgs")
    message_id = json.loads(raw)["message_id"]
    # As if two workers had already died on it (each crash redelivers the same message).
    client.set(f"tocsin:notify:deliveries:{message_id}", 2)
    notifier = start_service("notifier", TOCSIN_ROUTES_FILE=path, TOCSIN_MAX_DELIVERIES="2", **FAST)
    wait_until(lambda: len(dlq_list(redis_server.url)) == 1, what="the dead letter")
    [letter] = dlq_list(redis_server.url)
    assert (letter["id"], letter["reason"]) == (message_id, "too-many-deliveries")
    assert letter["actor"] == queues.DELIVER_NOTIFICATION_ACTOR
    time.sleep(0.5)
    assert hook.arrivals == []
    assert (
        metric(notifier.url, "tocsin_notifier_dead_lettered_total", reason="too-many-deliveries")
        == 1
    )


def test_a_firing_taken_after_its_resolve_does_not_revive_an_inhibition_source(
    redis_server: Any,
) -> None:
    from tocsin.notifier.inhibition import FiringIndex
    from tocsin.notifier.message import GroupedAlert
    from tocsin.notifier.routing import load_routing

    index = FiringIndex(redis.Redis.from_url(redis_server.url))
    source = alert("DatabaseDown", "fp-src", service="orders")
    target = alert("SlowQueries", "fp-tgt", service="orders")
    target.severity = "warning"
    rules = load_routing("""
receivers: [{name: a, type: webhook, url: x}]
route: {receiver: a}
inhibit_rules:
  - {source_matchers: [severity=critical], target_matchers: [severity=warning], equal: [service]}
""").inhibit_rules
    waiting = [GroupedAlert(transition="firing", status="firing", alert=target, at=1.0)]
    assert index.record(GroupedAlert(transition="firing", status="firing", alert=source, at=10.0))
    assert index.muted(waiting, rules) == {"fp-tgt"}
    assert index.record(
        GroupedAlert(transition="resolved", status="resolved", alert=source, at=20.0)
    )
    assert not index.record(
        GroupedAlert(transition="firing", status="firing", alert=source, at=15.0)
    )
    assert index.muted(waiting, rules) == set()
