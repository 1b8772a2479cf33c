"""SMTP sends with smtplib; SMTP reply codes map to outcomes (4xx temporary, 5xx permanent)."""

from __future__ import annotations

import smtplib
import ssl
import unicodedata
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from tocsin.notifier.message import Notification
from tocsin.notifier.receivers._base import TemplatedReceiver
from tocsin.notifier.receivers._errors import PermanentDeliveryError, TemporaryDeliveryError
from tocsin.notifier.receivers._http import require
from tocsin.notifier.templating import template_context

__all__ = ["EmailReceiver", "header_value"]

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

    def notify(self, notification: Notification) -> None:
        message = self.message(notification)
        context = ssl.create_default_context(cafile=self._ca_file or None)
        try:
            smtp: smtplib.SMTP
            if self._tls == "tls":
                smtp = smtplib.SMTP_SSL(
                    self._host, self._port, timeout=self._timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
            with smtp:
                if self._tls == "starttls":
                    smtp.starttls(context=context)
                if self._username:
                    smtp.login(self._username, self._password)
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            detail = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            if 400 <= exc.smtp_code < 500:
                raise TemporaryDeliveryError(detail) from None
            raise PermanentDeliveryError(detail) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentDeliveryError(f"recipients refused: {exc.recipients}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryDeliveryError(f"SMTP error: {exc}") from None
