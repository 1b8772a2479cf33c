"""Line breaks in alert names and labels: the email still arrives, on one Subject line."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from tests.integration.test_notifier_delivery import FAST, Enqueuer, alert, routes_file
from tests.support import wait_until

from tocsin.client.devserver import free_port
from tocsin.notifier.tools import dlq_list

pytestmark = pytest.mark.integration

# CR, LF, CRLF with an attempted header, VT, FF, NEL, U+2028 and U+2029.
HOSTILE_NAME = "Disk\r\nBcc: intruder@example.test\x0bFull\x0c\x85now\u2028and\u2029then"


class Mailbox:
    """The real SMTP receiver's handler: keeps every envelope it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.envelopes.append(envelope)
        return "250 OK"


def test_line_breaks_in_alert_name_and_group_label_are_folded_and_the_email_delivered(
    redis_server: Any, start_service: Any, tmp_path: Path
) -> None:
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    routes = routes_file(
        tmp_path,
        f"""
route:
  receiver: mail
  group_by: [alertname, team]
  group_wait: 100ms
receivers:
  - name: mail
    type: email
    host: 127.0.0.1
    port: {smtp.port}
    tls: none
    from: tocsin@example.test
    to: [oncall@example.test]
""",
    )
    try:
        start_service("notifier", TOCSIN_ROUTES_FILE=routes, **FAST)
        Enqueuer(redis_server.url).transition(alert(HOSTILE_NAME, "fp-hostile", team="db\r\nops"))
        wait_until(lambda: mailbox.envelopes, what="the email")
    finally:
        smtp.stop()
    [envelope] = mailbox.envelopes
    assert envelope.rcpt_tos == ["oncall@example.test"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["Bcc"] is None
    subject = str(message["Subject"])
    assert "Disk Bcc: intruder@example.test Full now and then" in subject
    assert "db ops" in subject
    assert not any(char in subject for char in "\r\n\x0b\x0c\x85\u2028\u2029")
    assert dlq_list(redis_server.url) == []
