"""Optional TLS for the services producers and browsers reach (ingest, gateway).

Off by default: in a cluster TLS usually ends at the ingress. Set both files to
serve https (and wss) directly, e.g. for PagerDuty clients that refuse an
http:// base URL, or a laptop without a proxy. uvicorn loads the pair at start
and the service stops there if either file is missing or they do not match.
"""

from __future__ import annotations

import dataclasses

from tocsin.common.config import ConfigError, setting

__all__ = ["TlsSettings"]


@dataclasses.dataclass(frozen=True)
class TlsSettings:
    """The certificate and key a service serves https with (both, or neither).

    A mixin: `class IngestSettings(TlsSettings, HttpServerSettings)`.
    """

    tls_cert_file: str = setting(
        "", "PEM certificate chain to serve https/wss with (with TOCSIN_TLS_KEY_FILE; empty: http)."
    )
    tls_key_file: str = setting("", "PEM private key of TOCSIN_TLS_CERT_FILE.")

    def __post_init__(self) -> None:
        # A mixin before CommonSettings in the bases: its own check runs here too.
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(
                "invalid configuration: TOCSIN_TLS_CERT_FILE and TOCSIN_TLS_KEY_FILE go together"
            )
