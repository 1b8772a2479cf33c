"""The hand-read upgrade (`read_upgrade`, `FirstRead`) against uvicorn's httptools protocol.

`read_upgrade` may decline anything, but what it accepts it must read exactly as
`LimitedHttpToolsProtocol` (httptools under uvicorn) does: the same method, target,
query and headers, and only requests that protocol would upgrade at all. The plain
forms real clients send must be accepted, or the fast path would never run.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tocsin.common.httplimits import HttpLimits, LimitedHttpToolsProtocol
from tocsin.common.uvicorn_shim import UpgradeRequest
from tocsin.gateway.handshake import FirstRead, query_token, read_upgrade

LIMITS = HttpLimits(max_head_bytes=600, max_url_bytes=80, max_headers=8)
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


class Transport(asyncio.Transport):
    """A connection's transport as the protocols see it: records writes and closes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.protocol: Any = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


class State:
    def __init__(self) -> None:
        self.connections: set[object] = set()
        self.tasks: set[object] = set()
        self.default_headers: list[tuple[bytes, bytes]] = []
        self.total_requests = 0


class Recorder(LimitedHttpToolsProtocol):
    """uvicorn's protocol as the gateway extends it, noting the upgrade it would take over."""

    upgraded: UpgradeRequest | None = None

    def handle_websocket_upgrade(self) -> None:
        self.upgraded = self.upgrade_request()
        self.release_parser()


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _config() -> uvicorn.Config:
    config = uvicorn.Config(_app, lifespan="off", ws="websockets-sansio", log_level="warning")
    config.load()
    return config


CONFIG = _config()
RECORDER = Recorder.with_limits(LIMITS)


def _uvicorn_reads(data: bytes) -> UpgradeRequest | None:
    """The upgrade uvicorn's protocol takes over on reading `data` first, if any."""
    protocol = RECORDER(config=CONFIG, server_state=State(), app_state={})
    protocol.connection_made(Transport())
    try:
        protocol.data_received(data)
        return protocol.upgraded  # type: ignore[attr-defined,no-any-return]
    finally:
        protocol.connection_lost(None)


def _request(first: bytes, headers: list[bytes], end: bytes = b"\r\n\r\n") -> bytes:
    return b"\r\n".join([first, *headers]) + end


PLAIN = [
    b"Host: 127.0.0.1:8000",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: " + KEY,
    b"Sec-WebSocket-Version: 13",
]
# What browsers, the SDK, websockets and the benchmarks send (names and casing vary).
EVERYDAY = [
    _request(b"GET /ws?token=abc.def.ghi HTTP/1.1", PLAIN),
    _request(
        b"GET /ws HTTP/1.1",
        [
            b"Host: gateway.example:443",
            b"Connection: keep-alive, Upgrade",
            b"Pragma: no-cache",
            b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
            b"Upgrade: websocket",
            b"Origin: https://console.example",
            b"Sec-WebSocket-Version: 13",
            b"Sec-WebSocket-Key: " + KEY,
        ],
    ),
    _request(
        b"GET /ws HTTP/1.1",
        [
            b"host: x",
            b"upgrade: WebSocket",
            b"connection: upgrade",
            b"sec-websocket-key: " + KEY,
            b"sec-websocket-version: 13",
            b"sec-websocket-protocol: tocsin.v1, bearer.abc.def.ghi",
        ],
    ),
]


async def test_the_requests_real_clients_send_are_read_by_hand_as_uvicorn_reads_them() -> None:
    for data in EVERYDAY:
        fast = read_upgrade(data, LIMITS)
        assert fast is not None, data
        assert fast == _uvicorn_reads(data)


_HEADER_LINES = st.sampled_from(
    [
        *PLAIN,
        b"Connection: keep-alive, Upgrade",
        b"Connection: keep-alive",
        b"Connection: upgradex",
        b"Connection:Upgrade",
        b"Connection: Upgrade ",
        b"Connection:  Upgrade",
        b"Connection: close, upgrade",
        b"Upgrade: h2c",
        b"Upgrade: websocket, h2c",
        b"Upgrade:\twebsocket",
        b"Content-Length: 0",
        b"Content-Length: 5",
        b"Transfer-Encoding: chunked",
        b"X-Empty: ",
        b"X-Empty:",
        b" folded: continuation",
        b"\tobs-fold",
        b"Bad Name: x",
        b"X-Tab: a\tb",
        b"X-High: caf\xc3\xa9",
        b"X-Colon: a: b",
        b"Expect: 100-continue",
        b"x-long: " + b"y" * 200,
    ]
)
_NAMES = st.text(alphabet="abcXYZ-_!:; \t\x00", min_size=0, max_size=6).map(str.encode)
_VALUES = st.text(alphabet="ab ,:\t\r\x7f\x80é", min_size=0, max_size=8).map(
    lambda text: text.encode()
)
_HEADERS = st.lists(
    st.one_of(_HEADER_LINES, st.builds(lambda n, v: n + b": " + v, _NAMES, _VALUES)),
    max_size=10,
)
_FIRST_LINES = st.builds(
    lambda method, target, version: method + b" " + target + b" " + version,
    st.sampled_from([b"GET", b"get", b"POST", b"HEAD", b"GET "]),
    st.one_of(
        st.sampled_from([b"/ws", b"/ws?token=a.b.c", b"/healthz", b"*", b"/ws#frag", b"/a b"]),
        st.text(alphabet="/ws?=&%#a+\x00é", max_size=100).map(str.encode),
    ),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "]),
)
_ENDS = st.sampled_from(
    [b"\r\n\r\n", b"\r\n\r\nGET /ws HTTP/1.1\r\n\r\n", b"\r\n", b"\n\n", b"\r\n\r\nxx"]
)


# Header lines a plain upgrade may carry besides its own.
_BENIGN = st.sampled_from(
    [
        b"Origin: https://console.example",
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)",
        b"Sec-WebSocket-Protocol: tocsin.v1, bearer.a.b.c",
        b"Pragma: no-cache",
        b"Expect: 100-continue",
        b"X-Colon: a: b",
    ]
)


def _mostly(plain: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`plain` three times in four, else `odd`: each part mostly plain, so that the
    requests read by hand are common among the declined ones."""
    return st.integers(0, 3).flatmap(lambda n: odd if n == 0 else plain)


@settings(max_examples=300)
@given(
    first=_mostly(st.just(b"GET /ws?token=a.b.c HTTP/1.1"), _FIRST_LINES),
    headers=_mostly(st.lists(_BENIGN, max_size=3), _HEADERS),
    plain=_mostly(st.permutations(PLAIN), st.lists(st.sampled_from(PLAIN), max_size=5)),
    end=_mostly(st.just(b"\r\n\r\n"), _ENDS),
    leading=_mostly(st.just(b""), st.just(b"\r\n")),
)
def test_what_is_read_by_hand_is_what_uvicorn_reads_and_anything_else_is_declined(
    first: bytes, headers: list[bytes], plain: list[bytes], end: bytes, leading: bytes
) -> None:
    data = leading + _request(first, [*plain, *headers], end)

    async def both() -> tuple[UpgradeRequest | None, UpgradeRequest | None]:
        return read_upgrade(data, LIMITS), _uvicorn_reads(data)

    fast, reference = asyncio.run(both())
    event("read by hand" if fast is not None else "declined")
    if fast is not None:
        assert fast == reference, data


def _first_read(opened: list[UpgradeRequest]) -> FirstRead:
    def open_socket(transport: Any, state: Any, request: UpgradeRequest, loop: Any) -> bool:
        opened.append(request)
        return request.target == b"/ws"

    protocol = FirstRead.serving(RECORDER, open_socket)(
        config=CONFIG, server_state=State(), app_state={}
    )
    return protocol


async def test_a_plain_upgrade_opens_the_socket_without_uvicorns_protocol() -> None:
    opened: list[UpgradeRequest] = []
    protocol = _first_read(opened)
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(EVERYDAY[0])
    assert [request.target for request in opened] == [b"/ws"]
    assert transport.protocol is None  # open_socket would have set its own
    assert not protocol._state.connections


async def test_anything_else_goes_to_uvicorns_protocol_with_the_read_and_idle_deadline() -> None:
    opened: list[UpgradeRequest] = []
    taken: dict[bytes, Any] = {}
    idle: dict[bytes, float] = {}
    for data in (
        _request(b"GET /elsewhere HTTP/1.1", PLAIN),  # declined by open_socket (a 404)
        b"GET /ws HTTP/1.1\r\nHost: x\r\n",  # unfinished
        b"\r\n",  # starts no request
        _request(b"GET /healthz HTTP/1.1", [b"Host: x"]),
    ):
        protocol = _first_read(opened)
        transport = Transport()
        protocol.connection_made(transport)
        idle[data] = protocol._idle_at
        protocol.data_received(data)
        assert isinstance(transport.protocol, Recorder), data
        assert transport.protocol.transport is transport
        taken[data] = transport.protocol
    await asyncio.sleep(0.05)
    elsewhere, unfinished, blank, healthz = taken.values()
    assert [request.target for request in opened] == [b"/elsewhere"]
    assert elsewhere.upgraded is not None  # read again there, and answered there
    # The head timeout runs from the first byte; bytes that start no request leave the
    # deadline the connection had from its accept.
    assert unfinished._deadline.when() != idle[b"GET /ws HTTP/1.1\r\nHost: x\r\n"]
    assert blank._deadline.when() == idle[b"\r\n"]
    assert healthz.transport.written.startswith(b"HTTP/1.1 204")
    for protocol in taken.values():
        protocol.connection_lost(None)


async def test_a_connection_that_sends_nothing_is_closed_at_its_idle_deadline() -> None:
    protocol = FirstRead.serving(
        Recorder.with_limits(HttpLimits(keepalive_timeout=0.05)), lambda *args: True
    )(config=CONFIG, server_state=State(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    assert protocol in protocol._state.connections
    await asyncio.sleep(0.3)
    assert transport.closed
    assert not protocol._state.connections


_QUERY_PARTS = st.sampled_from(["token", "token=", "=", "&", "a", "b=c", "%74", "+", ";", "é", "."])


@given(parts=st.lists(st.one_of(_QUERY_PARTS, st.text(max_size=6)), max_size=8))
def test_the_query_token_is_the_one_parse_qs_reads(parts: list[str]) -> None:
    # As the upgrade's query string arrives: bytes, which the endpoint read as latin-1.
    raw = "".join(parts).encode()
    assert query_token(raw) == parse_qs(raw.decode("latin-1")).get("token", [""])[0]


def test_a_plain_query_token_is_read_without_parse_qs() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln-_"
    assert query_token(f"x=1&token=&token={token}&token=other".encode()) == token
    assert query_token(b"tokens=a&token") == ""
