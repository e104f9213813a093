"""Events: what plugins and components have to tell (alerts, plugin faults), stored and delivered.

An `EventRecord` goes through `EventBus.emit`, which

1. stores it as a row of the catalog's `events` table (when the bus has a catalog), its stream's name looked
   up to the stream's id;
2. delivers it to the sinks configured for its source (``[[plugins.sinks.NAME]]``; those of ``"*"`` for a
   source without its own, else the log): `LogSink`, `JsonlSink`, `WebhookSink`;
3. passes it to the `on_event` hooks (through the plugin manager, guarded like every hook). Events raised
   by an `on_event` hook are stored and delivered (after the one that caused them) but not passed to
   `on_event` again, so that two plugins cannot answer each other forever.

`emit` never raises: a catalog that is down or a sink that fails is logged, and the event still reaches
the others. A webhook delivers from a thread of its own through a bounded queue, so a slow or unreachable
receiver never blocks the stream that raised the event; when the queue is full the event is dropped for that
sink and counted.

Webhook requests are HTTP POSTs of the event as JSON (`EventRecord` fields, ``created_at`` in ISO 8601),
signed as the Standard Webhooks spec does: ``webhook-id`` (one id per event, the same across its retries),
``webhook-timestamp`` (Unix seconds of the attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">``, so a captured request stops verifying once its timestamp is out of the
receiver's tolerance and neither the id nor the body can be changed. ``X-Vsalmonn-Event: <kind>`` is a
convenience for routing only (the signed body has the kind). A receiver checks a request with
`verify_webhook`. Connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff; a
429 or 503 with ``Retry-After`` waits as long as it asks (at most `MAX_RETRY_AFTER_S`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, field_validator

from vsalmonn.memory_store.redact import redact, redact_data

log = logging.getLogger(__name__)
event_log = logging.getLogger("vsalmonn.events")

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
EVENT_HEADER = "X-Vsalmonn-Event"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300  # how old (or how far ahead) a signed request's timestamp may be
MAX_RETRY_AFTER_S = 60.0  # the longest a receiver's Retry-After makes a delivery thread wait
DEFAULT_SINKS_KEY = "*"  # sinks of every source without its own entry


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EventRecord(BaseModel):
    """One event: what happened (`kind`, dotted, e.g. ``alert.person``, ``plugin.disabled``) and where."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(min_length=1, max_length=64)
    message: str = ""
    stream: str | None = Field(None, description="the stream's name, when it concerns one")
    source: str | None = Field(None, max_length=128, description="the plugin or component that raised it")
    t: float | None = Field(None, description="stream seconds, when it has one")
    payload: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=_utcnow)
    id: int | None = Field(None, description="its row in the catalog, once stored")


# --- sink settings ------------------------------------------------------------------------------------------


class LogSinkConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["log"] = "log"
    level: Literal["debug", "info", "warning", "error"] = "info"


class JsonlSinkConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["jsonl"] = "jsonl"
    path: Path = Field(description="appended to, one JSON object a line; relative: to the data directory")
    fsync: bool = Field(False, description="fsync after each line (durable against power loss, slower)")


class WebhookSinkConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://", description="receives a POST per event")
    secret: SecretStr | None = Field(None, description="key of the webhook-signature HMAC-SHA256")
    timeout_s: float = Field(5.0, gt=0, description="one request")
    retries: int = Field(3, ge=0, le=20, description="further attempts after a failed one")
    backoff_s: float = Field(0.5, ge=0, description="wait before the first retry; doubles with each")
    queue_size: int = Field(1000, ge=1, description="events waiting for delivery; beyond, new ones drop")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="added to every request (Authorization: secret, so never shown)"
    )

    @field_validator("secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("an empty webhook secret would send unsigned requests: set one or leave it out")
        return value


SinkConfig = Annotated[LogSinkConfig | JsonlSinkConfig | WebhookSinkConfig, Field(discriminator="type")]
_SINK_ADAPTER: TypeAdapter[Any] = TypeAdapter(SinkConfig)


def sink_config(data: Mapping[str, Any]) -> LogSinkConfig | JsonlSinkConfig | WebhookSinkConfig:
    """A sink's settings from a TOML table such as ``{type = "jsonl", path = "alerts.jsonl"}``."""
    return _SINK_ADAPTER.validate_python(dict(data))


# --- signatures ---------------------------------------------------------------------------------------------


class WebhookVerificationError(ValueError):
    """A webhook request that does not verify: a missing header, a bad signature, a stale timestamp."""


def _key(secret: str | bytes) -> bytes:
    """The HMAC key: a Standard Webhooks ``whsec_<base64>`` secret decoded, any other string as UTF-8."""
    if isinstance(secret, bytes):
        return secret
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error as exc:
            raise ValueError("a whsec_ secret must be base64 after its prefix") from exc
    return secret.encode()


def sign_webhook(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and the base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``."""
    if not secret:
        raise ValueError("an empty webhook secret signs nothing")
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header's value whatever the case of its name (receivers' frameworks differ); raises when missing."""
    for key, value in headers.items():
        if key.lower() == name:
            if value and value.strip():
                return value.strip()
            break
    raise WebhookVerificationError(f"missing header {name}")


def verify_webhook(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> str:
    """For receivers: check a request's Standard Webhooks signature over its raw `body`; return its id.

    Raises `WebhookVerificationError` for a missing header, a timestamp more than `tolerance_s` from `now`
    (a replayed request) or a signature that is not the secret's over the id, the timestamp and the body.
    The id is what to drop duplicates by: retries of one event carry the same one.
    """
    msg_id = _header(headers, ID_HEADER)
    raw_timestamp = _header(headers, TIMESTAMP_HEADER)
    signatures = _header(headers, SIGNATURE_HEADER)
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} is not Unix seconds: {raw_timestamp!r}") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} is {now - timestamp:+.0f} s off, outside the {tolerance_s:g} s tolerance"
        )
    expected = sign_webhook(secret, msg_id, timestamp, body).encode()
    # the header may carry several space-separated signatures (a receiver rotating its secret)
    if not any(hmac.compare_digest(expected, candidate.encode()) for candidate in signatures.split()):
        raise WebhookVerificationError("webhook signature does not match the id, timestamp and body")
    return msg_id


def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (delay seconds or an HTTP date); None if unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def event_body(record: EventRecord) -> bytes:
    """The bytes a sink writes for `record`: compact JSON, UTF-8 (what a webhook signs)."""
    return record.model_dump_json().encode()


# --- sinks --------------------------------------------------------------------------------------------------


class Sink(Protocol):
    def deliver(self, record: EventRecord) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


class LogSink:
    """Each event as one line of the ``vsalmonn.events`` logger."""

    def __init__(self, level: str = "info") -> None:
        self.level = logging.getLevelName(level.upper())

    def deliver(self, record: EventRecord) -> None:
        where = f" stream={record.stream}" if record.stream else ""
        when = f" t={record.t:.2f}" if record.t is not None else ""
        event_log.log(
            self.level,
            "event %s from %s%s%s: %s",
            record.kind,
            record.source or "-",
            where,
            when,
            record.message,
        )

    def close(self, timeout: float | None = None) -> None:
        pass


class JsonlSink:
    """Appends each event as one JSON line to a file (opened per event: log rotation needs nothing more)."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()

    def deliver(self, record: EventRecord) -> None:
        line = event_body(record) + b"\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())

    def close(self, timeout: float | None = None) -> None:
        pass


_STOP = object()


class WebhookSink:
    """POSTs each event to `url` from a background thread; see the module docstring for the protocol.

    `deliver` only queues (never blocks); `close` waits up to `timeout` for the queue to drain. Counters:
    `delivered`, `failed` (gave up after retries, or a 4xx answer), `dropped` (queue full or closed).
    """

    def __init__(
        self,
        url: str,
        secret: str | bytes | None = None,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        queue_size: int = 1000,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        import httpx  # here: only a process with a webhook pays for importing it

        if secret is not None and not secret:
            raise ValueError("an empty webhook secret would send unsigned requests")
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.headers = dict(headers or {})
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._httpx = httpx
        self._client = httpx.Client(timeout=timeout_s)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vsalmonn-webhook", daemon=True)
        self._thread.start()

    def deliver(self, record: EventRecord) -> None:
        if self._closed.is_set():
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            log.warning(
                "webhook %s: queue full, event %s dropped (%d so far)", self.url, record.kind, self.dropped
            )

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop taking events, deliver those queued (waiting at most `timeout` seconds), stop the thread."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("webhook %s: events still undelivered at close", self.url)
        else:
            self._client.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._post(item)
            except Exception as exc:  # the thread must outlive any surprise
                self.failed += 1
                log.error("webhook %s: event %s not delivered: %s", self.url, item.kind, exc)

    def _headers(self, msg_id: str, body: bytes) -> dict[str, str]:
        """One attempt's headers: signed with that attempt's time (Standard Webhooks re-signs retries)."""
        timestamp = int(time.time())
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            ID_HEADER: msg_id,
            TIMESTAMP_HEADER: str(timestamp),
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign_webhook(self.secret, msg_id, timestamp, body)
        return headers

    def _post(self, record: EventRecord) -> None:
        body = event_body(record)
        msg_id = f"msg_{uuid.uuid4().hex}"
        problem = ""
        wait_s = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(max(wait_s, self.backoff_s * 2 ** (attempt - 1)))
            wait_s = 0.0
            headers = self._headers(msg_id, body)
            headers[EVENT_HEADER] = record.kind
            try:
                response = self._client.post(self.url, content=body, headers=headers)
            except self._httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code < 300:
                self.delivered += 1
                return
            problem = f"HTTP {response.status_code}"
            if response.status_code in (429, 503):
                asked = retry_after_s(response.headers.get("Retry-After"))
                if asked is not None:
                    wait_s = min(asked, MAX_RETRY_AFTER_S)
            if response.status_code != 429 and response.status_code < 500:
                break  # the receiver refuses this event: retrying cannot help
        self.failed += 1
        log.error(
            "webhook %s: event %s not delivered after %d attempt(s): %s",
            self.url,
            record.kind,
            attempt + 1,
            problem,
        )


def _sink_key(config: LogSinkConfig | JsonlSinkConfig | WebhookSinkConfig) -> str:
    """Equal configs share one sink; their secrets count, though model_dump_json shows them masked."""
    if not isinstance(config, WebhookSinkConfig):
        return config.model_dump_json()
    secrets = [config.secret, *config.headers.values()]
    return config.model_dump_json() + json.dumps([s.get_secret_value() if s else None for s in secrets])


def make_sink(
    config: LogSinkConfig | JsonlSinkConfig | WebhookSinkConfig, base_dir: Path | None = None
) -> Sink:
    """The sink a configuration describes; a relative JSONL path is taken from `base_dir`."""
    if isinstance(config, LogSinkConfig):
        return LogSink(config.level)
    if isinstance(config, JsonlSinkConfig):
        path = config.path if config.path.is_absolute() or base_dir is None else Path(base_dir) / config.path
        return JsonlSink(path, fsync=config.fsync)
    return WebhookSink(
        config.url,
        config.secret.get_secret_value() if config.secret else None,
        timeout_s=config.timeout_s,
        retries=config.retries,
        backoff_s=config.backoff_s,
        queue_size=config.queue_size,
        headers={name: value.get_secret_value() for name, value in config.headers.items()},
    )


# --- the bus ------------------------------------------------------------------------------------------------


def _jsonable(payload: Mapping[str, Any]) -> dict[str, Any]:
    """`payload` as plain JSON values (anything else by its str), as the catalog's JSON column stores it."""
    return json.loads(json.dumps(dict(payload), default=str))


class EventBus:
    """Stores events in the catalog, passes them to `on_event`, and delivers them to their source's sinks.

    `store`: a `MemoryStore` or a `Catalog` (None: events are not stored). `sinks`: sink settings by source
    name, ``"*"`` for the default (else the log). `on_event`: called with each stored record (the plugin
    manager's guarded `on_event` dispatch). `base_dir`: where relative JSONL paths lead. Thread-safe.
    """

    def __init__(
        self,
        store: Any = None,
        *,
        sinks: Mapping[str, Sequence[Any]] | None = None,
        on_event: Callable[[EventRecord], None] | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.catalog = getattr(store, "catalog", store)
        self.on_event = on_event
        self.base_dir = base_dir
        self._sink_configs = {
            name: [c if isinstance(c, BaseModel) else sink_config(c) for c in configs]
            for name, configs in (sinks or {}).items()
        }
        self._sinks: dict[str, Sink] = {}  # by the JSON of their config: one sink per target
        self._stream_ids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._closed = False

    def event(
        self,
        kind: str,
        message: str = "",
        *,
        source: str | None = None,
        stream: str | None = None,
        t: float | None = None,
        **payload: Any,
    ) -> EventRecord | None:
        """Build and emit an event; None if the arguments do not make a valid event (logged)."""
        try:
            record = EventRecord(
                kind=kind, message=message, source=source, stream=stream, t=t, payload=payload
            )
        except Exception as exc:
            log.error("invalid event %r from %s: %s", kind, source, exc)
            return None
        return self.emit(record)

    def emit(self, record: EventRecord) -> EventRecord:
        """Store, dispatch and deliver `record`; the stored copy (with its `id`) is returned. Never raises."""
        try:
            # Credentials in URLs (a camera's user:pw@, ?token=) never reach the table, a sink or a plugin.
            record = record.model_copy(
                update={"payload": redact_data(_jsonable(record.payload)), "message": redact(record.message)}
            )
        except Exception as exc:  # a payload json cannot even stringify
            log.error("event %s from %s: payload dropped: %s", record.kind, record.source, exc)
            record = record.model_copy(update={"payload": {}})
        record = self._store(record)
        for sink in self._sinks_for(record.source):
            try:
                sink.deliver(record)
            except Exception as exc:
                log.error("event %s: sink %s failed: %s", record.kind, type(sink).__name__, exc)
        if self.on_event is not None and not getattr(self._local, "dispatching", False):
            self._local.dispatching = True
            try:
                self.on_event(record)
            except Exception as exc:
                log.error("event %s: on_event dispatch failed: %s", record.kind, exc)
            finally:
                self._local.dispatching = False
        return record

    def _store(self, record: EventRecord) -> EventRecord:
        if self.catalog is None:
            return record
        from vsalmonn.memory_store.rows.events import add_event

        try:
            stream_id = self._stream_id(record.stream) if record.stream else None
            payload = dict(record.payload)
            if record.stream and stream_id is None:
                payload.setdefault("stream", record.stream)  # not (yet) a stream of the catalog
            row_id = add_event(
                self.catalog,
                stream_id=stream_id,
                kind=record.kind,
                source=record.source,
                t=record.t,
                message=record.message,
                payload=payload or None,
                created_at=record.created_at,
            )
            return record.model_copy(update={"id": row_id})
        except Exception as exc:  # the catalog being down must not take the caller with it
            log.warning("could not store event %s (%s): %s", record.kind, record.message, exc)
            return record

    def _stream_id(self, name: str) -> str | None:
        with self._lock:
            cached = self._stream_ids.get(name)
        if cached is not None:
            return cached
        row = self.catalog.stream(name)
        if row is None:
            return None
        with self._lock:
            self._stream_ids[name] = row.id
        return row.id

    def sink_configs(self, source: str | None) -> list[Any]:
        """The sink settings that apply to events of `source`."""
        configs = self._sink_configs.get(source or "")
        if configs is None:
            configs = self._sink_configs.get(DEFAULT_SINKS_KEY, [LogSinkConfig()])
        return list(configs)

    def _sinks_for(self, source: str | None) -> list[Sink]:
        sinks = []
        for config in self.sink_configs(source):
            key = _sink_key(config)
            with self._lock:
                if self._closed:
                    return []
                sink = self._sinks.get(key)
                if sink is None:
                    try:
                        sink = self._sinks[key] = make_sink(config, self.base_dir)
                    except Exception as exc:
                        log.error("event sink %s cannot be made: %s", config.type, exc)
                        continue
            sinks.append(sink)
        return sinks

    def sinks(self) -> list[Sink]:
        """The sinks made so far (one per distinct configuration)."""
        with self._lock:
            return list(self._sinks.values())

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush and close every sink (webhooks: up to `timeout` seconds each); later events go nowhere."""
        with self._lock:
            self._closed = True
            sinks = list(self._sinks.values())
        for sink in sinks:
            try:
                sink.close(timeout)
            except Exception as exc:
                log.warning("closing event sink %s: %s", type(sink).__name__, exc)
