"""Webhook signing as Standard Webhooks does it, checked on a real loopback HTTP server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vsalmonn.plugins import EventRecord, WebhookVerificationError, verify_webhook
from vsalmonn.plugins.events import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSink,
    retry_after_s,
    sign_webhook,
)
from vsalmonn.settings import SettingsError, load_settings

SECRET = "s3cret-of-the-receiver"


class Receiver(BaseHTTPRequestHandler):
    answers: list[tuple[int, dict[str, str]]]
    received: list[tuple[float, dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((time.monotonic(), dict(self.headers), body))
        status, extra = self.answers.pop(0) if self.answers else (200, {})
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[Receiver]]]:
    handler = type("Handler", (Receiver,), {"answers": [], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()


def deliver(url: str, record: EventRecord, **kwargs: Any) -> WebhookSink:
    sink = WebhookSink(url, SECRET, timeout_s=2, **kwargs)
    sink.deliver(record)
    sink.close(timeout=10)
    return sink


def test_a_delivered_webhook_verifies_and_carries_its_id_and_time(
    receiver: tuple[str, type[Receiver]],
) -> None:
    url, handler = receiver
    before = int(time.time())
    sink = deliver(url, EventRecord(kind="alert.person", message="at the gate", stream="cam", t=2.0))
    assert sink.delivered == 1
    ((_, headers, body),) = handler.received
    assert before <= int(headers[TIMESTAMP_HEADER]) <= time.time()
    assert headers[SIGNATURE_HEADER].startswith("v1,")
    assert verify_webhook(SECRET, headers, body) == headers[ID_HEADER]
    # a receiver's framework may hand over the headers in any case
    assert verify_webhook(SECRET, {k.upper(): v for k, v in headers.items()}, body) == headers[ID_HEADER]
    assert EventRecord.model_validate_json(body).message == "at the gate"


def test_a_replay_a_tampered_body_or_id_and_missing_headers_are_rejected(
    receiver: tuple[str, type[Receiver]],
) -> None:
    url, handler = receiver
    deliver(url, EventRecord(kind="alert.person", message="at the gate"))
    ((_, headers, body),) = handler.received
    sent = int(headers[TIMESTAMP_HEADER])

    with pytest.raises(WebhookVerificationError, match="tolerance"):  # captured and replayed 10 minutes on
        verify_webhook(SECRET, headers, body, now=sent + 600)
    verify_webhook(SECRET, headers, body, now=sent + 299)  # within the default 300 s it still verifies
    # re-stamping the replay with a fresh time breaks the signature, which covers the timestamp
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(SECRET, {**headers, TIMESTAMP_HEADER: str(sent + 600)}, body, now=sent + 600)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(SECRET, headers, body.replace(b"at the gate", b"all is well"))
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(SECRET, {**headers, ID_HEADER: "msg_another"}, body)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook("another secret", headers, body)
    for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
        with pytest.raises(WebhookVerificationError, match=f"missing header {name}"):
            verify_webhook(SECRET, {k: v for k, v in headers.items() if k != name}, body)
    with pytest.raises(WebhookVerificationError, match="Unix seconds"):
        verify_webhook(SECRET, {**headers, TIMESTAMP_HEADER: "yesterday"}, body)


def test_signature_follows_standard_webhooks() -> None:
    # the spec's key form (whsec_ + base64) and a second, space-separated signature (secret rotation)
    import base64
    import hashlib
    import hmac

    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    body = b'{"kind":"a"}'
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()).decode()
    assert sign_webhook(secret, "msg_1", 1700000000, body) == f"v1,{expected}"
    headers = {
        ID_HEADER: "msg_1",
        TIMESTAMP_HEADER: "1700000000",
        SIGNATURE_HEADER: f"v1,bm9wZQ== v1,{expected}",
    }
    assert verify_webhook(secret, headers, body, now=1700000100) == "msg_1"


def test_retries_keep_the_id_and_a_429_retry_after_is_waited(receiver: tuple[str, type[Receiver]]) -> None:
    url, handler = receiver
    handler.answers[:] = [(429, {"Retry-After": "1"}), (200, {})]
    sink = deliver(url, EventRecord(kind="a"), retries=2, backoff_s=0.01)
    assert sink.delivered == 1 and len(handler.received) == 2
    (t1, h1, b1), (t2, h2, b2) = handler.received
    assert t2 - t1 >= 1.0  # the receiver's 1 s, not the 0.01 s backoff
    assert h1[ID_HEADER] == h2[ID_HEADER]  # one event, one id across its retries
    assert verify_webhook(SECRET, h2, b2) == verify_webhook(SECRET, h1, b1)


def test_retry_after_reads_seconds_and_http_dates_and_is_bounded(
    receiver: tuple[str, type[Receiver]],
) -> None:
    now = 1_700_000_000.0
    assert retry_after_s("7", now=now) == 7.0
    assert retry_after_s(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert retry_after_s(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry_after_s("soon", now=now) is None and retry_after_s(None) is None

    url, handler = receiver  # a 503 asking for an hour waits the 60 s bound at most, not an hour
    handler.answers[:] = [(503, {"Retry-After": "3600"})]
    sink = WebhookSink(url, SECRET, timeout_s=2, retries=1, backoff_s=0.01)
    slept: list[float] = []
    import vsalmonn.plugins.events as events

    real_sleep = events.time.sleep
    events.time.sleep = lambda s: slept.append(s)  # type: ignore[assignment]
    try:
        sink.deliver(EventRecord(kind="a"))
        sink.close(timeout=10)
    finally:
        events.time.sleep = real_sleep  # type: ignore[assignment]
    assert slept == [60.0] and sink.delivered == 1


def test_an_empty_secret_is_refused_at_settings_load(tmp_path: Path) -> None:
    config = tmp_path / "vsalmonn.toml"
    config.write_text(
        '[[plugins.sinks."*"]]\ntype = "webhook"\nurl = "http://127.0.0.1:9/hook"\nsecret = ""\n'
    )
    with pytest.raises(SettingsError, match="empty webhook secret") as info:
        load_settings(config=config, environ={})
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="empty webhook secret"):
        WebhookSink("http://127.0.0.1:9/hook", "")
