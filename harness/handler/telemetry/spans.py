"""A request's spans, built finished from the timings taken on the way.

The handler records telemetry after the response has gone, when every start and end time is known.
Going through `Tracer.start_span` and `Span.end` then pays for a sampler, attribute validation, locks
and context objects, for five spans whose whole content is already at hand. Here they are built
directly as the SDK's `ReadableSpan`s and handed to its span processors: the same objects the SDK would
have produced. (`loadtests/benchmarks/bench_telemetry.py` prints what recording a request costs now.)

Sampling follows the SDK's default, parent-based always-on: a request whose trace parent says "not
sampled" gets no spans; any other gets them all.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


class SpanRecorder:
    """Builds finished spans under one resource and scope and passes them to its processors."""

    def __init__(self, resource: Resource, scope: InstrumentationScope) -> None:
        self.resource = resource
        self.scope = scope
        self._processors: list[SpanProcessor] = []
        self._on_end = self._fan_out
        # Its own generator (seeded from the OS): ids never touch, nor depend on, the global random state.
        self._bits = random.Random().getrandbits

    def add_processor(self, processor: SpanProcessor) -> None:
        self._processors.append(processor)
        # With one processor (the usual case), spans go to it without the fan-out loop.
        self._on_end = processor.on_end if len(self._processors) == 1 else self._fan_out

    def _fan_out(self, span: ReadableSpan) -> None:
        for processor in self._processors:
            processor.on_end(span)

    def _span_id(self) -> int:
        span_id = self._bits(64)
        while not span_id:
            span_id = self._bits(64)
        return span_id

    def root(
        self,
        name: str,
        parent: Context | None,
        *,
        kind: SpanKind,
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, Any],
        status: Status | None = None,
    ) -> SpanContext | None:
        """Records the request's span under the caller's trace parent (if any); returns its context, or
        None when the parent asked for no sampling. `status` None is unset."""
        remote = trace.get_current_span(parent).get_span_context() if parent is not None else None
        if remote is not None and remote.is_valid:
            if not remote.trace_flags.sampled:
                return None
            trace_id, trace_state, parent_context = remote.trace_id, remote.trace_state, remote
        else:
            trace_id = self._bits(128)
            while not trace_id:
                trace_id = self._bits(128)
            trace_state, parent_context = None, None
        context = SpanContext(trace_id, self._span_id(), is_remote=False, trace_flags=_SAMPLED, trace_state=trace_state)
        self._emit(name, context, parent_context, kind, start_ns, end_ns, attributes, status or _UNSET)
        return context

    def children(self, parent: SpanContext, marks: Sequence[tuple[str, int, int]]) -> None:
        """One internal span per (name, start_ns, end_ns) under `parent`."""
        for name, start_ns, end_ns in marks:
            context = SpanContext(
                parent.trace_id, self._span_id(), is_remote=False, trace_flags=_SAMPLED, trace_state=parent.trace_state
            )
            self._emit(name, context, parent, SpanKind.INTERNAL, start_ns, end_ns, None, _UNSET)

    def _emit(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, Any] | None,
        status: Status,
    ) -> None:
        if not self._processors:
            return  # no one to hand spans to (no OTLP endpoint): the ids still serve as exemplars
        self._on_end(
            ReadableSpan(
                name=name,
                context=context,
                parent=parent,
                resource=self.resource,
                attributes=attributes or None,  # the caller's fresh dict: spans are not copied
                kind=kind,
                status=status,
                start_time=start_ns,
                end_time=end_ns,
                instrumentation_scope=self.scope,
            )
        )

    def shutdown(self) -> None:
        for processor in self._processors:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all([processor.force_flush(timeout_millis) for processor in self._processors])


def span_in_context(context: SpanContext) -> Context:
    """A context whose current span is `context`: measurements recorded in it get exemplars of it."""
    return trace.set_span_in_context(NonRecordingSpan(context))
