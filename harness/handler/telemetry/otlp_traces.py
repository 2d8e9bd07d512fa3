"""OTLP/HTTP export of finished spans, with an encoder built for a server's steady stream of spans.

The SDK's generic encoder (`opentelemetry-exporter-otlp-proto-common`) is built for any mix of spans: it
hashes the resource (a JSON dump) for every span and builds every attribute's message anew. A handler
sends the same resource, scope and mostly the same attribute values for every request, so here the
resource and scope are encoded once and each (key, value) pair once. The messages are the same ones,
from `opentelemetry-proto`, built in place; a test checks that both encoders produce the same bytes.
`loadtests/benchmarks/bench_telemetry.py` prints what each takes for a request's five spans.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PBResource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PBSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope as SDKScope
from opentelemetry.trace import SpanContext, SpanKind

logger = logging.getLogger(__name__)

_KINDS = {
    SpanKind.INTERNAL: PBSpan.SPAN_KIND_INTERNAL,
    SpanKind.SERVER: PBSpan.SPAN_KIND_SERVER,
    SpanKind.CLIENT: PBSpan.SPAN_KIND_CLIENT,
    SpanKind.PRODUCER: PBSpan.SPAN_KIND_PRODUCER,
    SpanKind.CONSUMER: PBSpan.SPAN_KIND_CONSUMER,
}
_HAS_IS_REMOTE = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_CACHEABLE = frozenset({str, bool, int})
# Retryable answers, as the OTLP/HTTP specification lists them.
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


def any_value(value: Any) -> AnyValue:
    """An attribute value as OTLP's AnyValue (the same mapping as the SDK's encoder)."""
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Sequence):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, Mapping):
        return AnyValue(
            kvlist_value=KeyValueList(values=[KeyValue(key=str(k), value=any_value(v)) for k, v in value.items()])
        )
    raise TypeError(f"cannot encode an attribute value of type {type(value).__name__}")


class SpanEncoder:
    """Encodes spans to an OTLP ExportTraceServiceRequest, caching what repeats. Used from one exporting
    thread at a time (the batch processor's); the caches are bounded."""

    def __init__(self, max_cached_values: int = 4096) -> None:
        self._values: dict[tuple[str, type, Any], KeyValue] = {}
        self._max_values = max_cached_values
        self._resources: dict[int, tuple[Any, Any]] = {}
        self._scopes: dict[int, tuple[Any, Any]] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        # Spans are grouped by equal resource and equal scope, as the SDK's encoder does. Each distinct
        # object is compared (a resource's equality is a JSON dump) once, then known by its id.
        alias: dict[int, int] = {}
        resources: dict[int, Resource] = {}
        scopes: dict[int, SDKScope | None] = {}

        def canonical(obj: Any, firsts: dict[int, Any]) -> int:
            key = alias.get(id(obj))
            if key is None:
                key = alias[id(obj)] = next((k for k, first in firsts.items() if first == obj), id(obj))
                firsts.setdefault(key, obj)
            return key

        grouped: dict[int, dict[int, list[ReadableSpan]]] = {}
        for span in spans:
            by_scope = grouped.setdefault(canonical(span.resource, resources), {})
            by_scope.setdefault(canonical(span.instrumentation_scope, scopes), []).append(span)
        # Messages are built in place (`add()`): a message passed to a constructor would be copied.
        request = ExportTraceServiceRequest()
        for resource_key, by_scope in grouped.items():
            resource = resources[resource_key]
            resource_spans = request.resource_spans.add()
            resource_spans.resource.CopyFrom(self._resource(resource))
            if resource.schema_url:
                resource_spans.schema_url = resource.schema_url
            for scope_key, members in by_scope.items():
                scope = scopes[scope_key]
                scope_spans = resource_spans.scope_spans.add()
                scope_spans.scope.CopyFrom(self._scope(scope))
                if scope is not None and scope.schema_url:
                    scope_spans.schema_url = scope.schema_url
                add = scope_spans.spans.add
                for span in members:
                    self._fill(add(), span)
        return request.SerializePartialToString()

    def _fill(self, out: PBSpan, span: ReadableSpan) -> None:
        context: SpanContext = span.context  # type: ignore[assignment]
        parent = span.parent
        out.trace_id = context.trace_id.to_bytes(16, "big")
        out.span_id = context.span_id.to_bytes(8, "big")
        if parent is not None:
            out.parent_span_id = parent.span_id.to_bytes(8, "big")
            out.flags = _HAS_IS_REMOTE | _IS_REMOTE if parent.is_remote else _HAS_IS_REMOTE
        else:
            out.flags = _HAS_IS_REMOTE
        if context.trace_state:
            out.trace_state = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
        out.name = span.name
        out.kind = _KINDS[span.kind]
        out.start_time_unix_nano = span.start_time or 0
        out.end_time_unix_nano = span.end_time or 0
        attributes = span.attributes
        if attributes:
            out.attributes.extend(self._attributes(attributes))
        status = span.status
        out.status.SetInParent()
        if status.status_code.value:
            out.status.code = status.status_code.value
        if status.description:
            out.status.message = status.description
        for event in span.events:
            encoded_event = out.events.add()
            encoded_event.name = event.name
            encoded_event.time_unix_nano = event.timestamp
            encoded_event.attributes.extend(self._attributes(event.attributes))
            encoded_event.dropped_attributes_count = event.dropped_attributes
        for link in span.links:
            encoded_link = out.links.add()
            encoded_link.trace_id = link.context.trace_id.to_bytes(16, "big")
            encoded_link.span_id = link.context.span_id.to_bytes(8, "big")
            encoded_link.attributes.extend(self._attributes(link.attributes))
            encoded_link.dropped_attributes_count = link.dropped_attributes
            encoded_link.flags = _HAS_IS_REMOTE | _IS_REMOTE if link.context.is_remote else _HAS_IS_REMOTE
        if span.dropped_attributes:
            out.dropped_attributes_count = span.dropped_attributes
        if span.dropped_events:
            out.dropped_events_count = span.dropped_events
        if span.dropped_links:
            out.dropped_links_count = span.dropped_links

    def _attributes(self, attributes: Mapping[str, Any] | None) -> list[KeyValue]:
        if not attributes:
            return []
        out = []
        cache = self._values
        for key, value in attributes.items():
            # Strings, booleans and integers are cached (floats are not: 0.0 == -0.0, and NaN != NaN).
            cacheable = type(value) in _CACHEABLE
            pair = cache.get((key, type(value), value)) if cacheable else None
            if pair is None:
                try:
                    pair = KeyValue(key=key, value=any_value(value))
                except (TypeError, ValueError, OverflowError) as exc:
                    # As the SDK's encoder does: the attribute is left out, the span is kept.
                    logger.warning("span attribute %s not exported: %s", key, exc)
                    continue
                if cacheable:
                    if len(cache) >= self._max_values:
                        cache.clear()  # a value that varies per request must not grow the cache forever
                    cache[(key, type(value), value)] = pair
            out.append(pair)
        return out

    def _resource(self, resource: Resource) -> PBResource:
        return self._once(self._resources, resource, lambda r: PBResource(attributes=self._attributes(r.attributes)))

    def _scope(self, scope: SDKScope | None) -> InstrumentationScope:
        return self._once(
            self._scopes,
            scope,
            lambda s: (
                InstrumentationScope()
                if s is None
                else InstrumentationScope(name=s.name, version=s.version, attributes=self._attributes(s.attributes))
            ),
        )

    @staticmethod
    def _once(table: dict[int, tuple[Any, Any]], obj: Any, build: Callable[[Any], Any]) -> Any:
        """`build(obj)`, remembered for this very object (by id, checked by identity), in a bounded table."""
        cached = table.get(id(obj))
        if cached is None or cached[0] is not obj:
            if len(table) >= 64:
                table.clear()
            cached = table[id(obj)] = (obj, build(obj))
        return cached[1]


class OTLPHTTPSpanExporter(SpanExporter):
    """Spans to an OTLP/HTTP endpoint (binary protobuf) over one keep-alive session; retryable failures
    (connection errors, 429, 502, 503, 504) are retried with backoff until the export timeout."""

    def __init__(self, endpoint: str, timeout_s: float = 10.0, headers: Mapping[str, str] | None = None) -> None:
        import requests  # the OTLP/HTTP exporters' own dependency; imported in the exporting thread

        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._encoder = SpanEncoder()
        self._session = requests.Session()
        self._session.headers.update({"Content-Type": "application/x-protobuf", **(headers or {})})
        self._shutdown = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        import requests

        if self._shutdown.is_set():
            return SpanExportResult.FAILURE
        try:
            data = self._encoder.encode(spans)
        except Exception:  # the batch is lost, and counted by the caller; the exporter lives on
            logger.exception("span batch could not be encoded")
            return SpanExportResult.FAILURE
        deadline = time.monotonic() + self.timeout_s
        backoff_s = 0.25
        while True:
            remaining = deadline - time.monotonic()
            try:
                response = self._session.post(self.endpoint, data=data, timeout=max(remaining, 0.05))
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.ok:
                    return SpanExportResult.SUCCESS
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in RETRYABLE_STATUS:
                    logger.warning("span export to %s failed (%s), not retried", self.endpoint, problem)
                    return SpanExportResult.FAILURE
            remaining = deadline - time.monotonic()
            if remaining < backoff_s or self._shutdown.wait(backoff_s):
                logger.warning("span export to %s failed (%s)", self.endpoint, problem)
                return SpanExportResult.FAILURE
            backoff_s *= 2

    def shutdown(self) -> None:
        self._shutdown.set()
        self._session.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
