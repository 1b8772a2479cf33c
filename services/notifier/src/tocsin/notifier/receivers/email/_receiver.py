"""SMTP sends with aiosmtplib; SMTP reply codes map to outcomes (4xx temporary, 5xx permanent).

aiosmtplib bounds what a server can make it read (8 KiB a reply line, 32 KiB a
reply); the send loop's deadline bounds the time.
"""

from __future__ import annotations

import ssl
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpcore

from tocsin.notifier.message import Notification
from tocsin.notifier.receivers._base import TemplatedReceiver
from tocsin.notifier.receivers._errors import PermanentDeliveryError, TemporaryDeliveryError
from tocsin.notifier.receivers._http import require
from tocsin.notifier.templating import template_context

__all__ = ["EmailReceiver", "SmtpSend", "header_value"]

_TLS_MODES = ("none", "starttls", "tls")


def header_value(text: str) -> str:
    """`text` on one header line: every line break and control character folded to a space.

    Alert names and labels reach the Subject; a CR, LF, VT, FF, NEL or U+2028 in
    them makes the `email` package refuse the header (the page would be lost),
    and a bare CR or LF could otherwise start a header of the sender's choosing.
    """
    kept = (" " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char for char in text)
    return " ".join("".join(kept).split())


class EmailReceiver(TemplatedReceiver):
    """Sends a multipart/alternative message (text and HTML) to `to` through `host:port`."""

    kind = "email"

    def configure(self, options: Mapping[str, Any]) -> None:
        self._host = require(options, "host", self.kind)
        self._port = int(options.get("port") or 587)
        self._sender = require(options, "from", self.kind)
        to = options.get("to")
        self._to = [to] if isinstance(to, str) else [str(x) for x in (to or [])]
        if not self._to:
            raise ValueError("email receiver needs `to`")
        self._tls = str(options.get("tls") or "starttls")
        if self._tls not in _TLS_MODES:
            raise ValueError(f"email `tls` is one of {', '.join(_TLS_MODES)}")
        # A private CA (PEM) to trust for the server's certificate, besides the system's.
        self._ca_file = str(options.get("ca_file") or "")
        self._username = str(options.get("username") or "")
        self._password = str(options.get("password") or "")

    def message(self, notification: Notification) -> EmailMessage:
        context = template_context(notification)
        subject = self.render("subject", context).strip()
        context["title"] = subject
        message = EmailMessage()
        message["Subject"] = header_value(subject)
        message["From"] = self._sender
        message["To"] = ", ".join(self._to)
        message["X-Tocsin-Notification-Id"] = notification.id
        message.set_content(self.render("text", context))
        message.add_alternative(self.render("html", context), subtype="html")
        return message

    def prepare(self, notification: Notification) -> SmtpSend:
        # The CA file is read here, on the worker thread, not on the send loop.
        context = ssl.create_default_context(cafile=self._ca_file or None)
        return SmtpSend(
            message=self.message(notification),
            host=self._host,
            port=self._port,
            tls=self._tls,
            context=context,
            username=self._username,
            password=self._password,
            timeout=self._timeout,
        )


@dataclass(frozen=True, slots=True)
class SmtpSend:
    """A rendered email and the server to submit it to."""

    message: EmailMessage
    host: str
    port: int
    tls: str
    context: ssl.SSLContext
    username: str
    password: str
    timeout: float

    async def send(self, http: httpcore.AsyncConnectionPool) -> None:
        try:
            await aiosmtplib.send(
                self.message,
                hostname=self.host,
                port=self.port,
                use_tls=self.tls == "tls",
                start_tls=self.tls == "starttls",
                tls_context=self.context,
                username=self.username or None,
                password=self.password or None,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = [r.recipient for r in exc.recipients]
            raise PermanentDeliveryError(f"recipients refused: {refused}") from None
        except aiosmtplib.SMTPResponseException as exc:
            detail = f"SMTP {exc.code}: {exc.message!r}"
            if 400 <= exc.code < 500:
                raise TemporaryDeliveryError(detail) from None
            raise PermanentDeliveryError(detail) from None
        except (OSError, aiosmtplib.SMTPException) as exc:
            raise TemporaryDeliveryError(f"SMTP error: {exc}") from None
