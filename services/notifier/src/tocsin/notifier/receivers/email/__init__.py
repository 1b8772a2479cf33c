"""The email receiver: SMTP (plain, STARTTLS or TLS, with auth), multipart text + HTML."""

from tocsin.notifier.receivers.email._receiver import EmailReceiver, SmtpSend

__all__ = ["EmailReceiver", "SmtpSend"]
