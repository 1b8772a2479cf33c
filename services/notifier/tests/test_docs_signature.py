"""The signature verification example in docs/notifications.md works on what we send."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from tocsin.notifier.receivers.webhook import sign

DOC = Path(__file__).resolve().parents[3] / "docs" / "notifications.md"


def documented_verifier() -> Any:
    text = DOC.read_text()
    section = text[text.index("### Verifying the signature") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the example code block is missing"
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), str(DOC), "exec"), namespace)
    return namespace["verify_tocsin_signature"]


def test_documented_example_accepts_our_signature_and_refuses_tampering_and_replays() -> None:
    verify = documented_verifier()
    body = b'{"id":"n1","status":"firing"}'
    now = int(time.time())
    assert verify("s3cret", body, sign("s3cret", body, now))
    assert not verify("s3cret", body + b" ", sign("s3cret", body, now))
    assert not verify("wrong", body, sign("s3cret", body, now))
    assert not verify("s3cret", body, sign("s3cret", body, now - 3600))
    assert not verify("s3cret", body, "v1=deadbeef")
