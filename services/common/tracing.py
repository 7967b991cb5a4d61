"""OpenTelemetry set-up: OTLP export when an endpoint is configured, a JSON-lines file otherwise.

Services only use the OpenTelemetry API; :func:`configure_tracing` (called once by the entry point)
installs the SDK provider. Without it every span is a no-op, so tests and libraries pay nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

log = logging.getLogger(__name__)


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per finished span to a file (readable with ``jq``).

    The file is capped: once it holds ``max_bytes`` it is renamed to ``<name>.1`` (replacing the previous
    one) and a new file is started, so a stage's traces never take more than twice ``max_bytes``.
    """

    def __init__(self, path: Path, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes={max_bytes} must be > 0")
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.get_span_context()
            lines.append(json.dumps({
                "name": span.name,
                "trace_id": f"{ctx.trace_id:032x}",
                "span_id": f"{ctx.span_id:016x}",
                "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                "service": span.resource.attributes.get("service.name"),
                "start_unix_ns": span.start_time,
                "duration_ms": (span.end_time - span.start_time) / 1e6 if span.end_time else None,
                "status": span.status.status_code.name,
                "attributes": dict(span.attributes or {}),
            }, default=str))
        with self._lock:
            try:
                if self.path.stat().st_size >= self.max_bytes:
                    self.path.replace(self.path.with_name(self.path.name + ".1"))
            except FileNotFoundError:
                pass
            with self.path.open("a") as f:
                f.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: the file is opened per export."""


def configure_tracing(service: str, *, otlp_endpoint: str | None, jsonl_path: Path | None,
                      jsonl_max_bytes: int = 64 * 1024 * 1024) -> TracerProvider | None:
    """Install the SDK tracer provider for ``service``; returns it, or None when tracing stays off."""
    if otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTLP endpoint %s configured but opentelemetry-exporter-otlp is not installed "
                        "(pip install 'voxpipe[otlp]'); writing traces to %s instead", otlp_endpoint, jsonl_path)
        else:
            exporter: SpanExporter = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)
            return _install(service, exporter)
    if jsonl_path is None:
        return None
    return _install(service, JsonLinesSpanExporter(jsonl_path, max_bytes=jsonl_max_bytes))


def _install(service: str, exporter: SpanExporter) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": f"voxpipe-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    return provider


def inject_metadata(metadata: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Add the current trace context (``traceparent``) to outgoing gRPC metadata."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return metadata + list(carrier.items())


def extract_context(metadata: Mapping[str, str]):
    """The trace context carried by incoming gRPC metadata."""
    return propagate.extract(dict(metadata))
