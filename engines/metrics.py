"""Prometheus metrics of the engine layer, shared by every service process.

prometheus_client metrics are process-wide by design; they are defined once here and labelled by
stage and model so every batcher and servicer reports into the same families.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0)

STAGE_SECONDS = Histogram(
    "voxpipe_stage_seconds",
    "Time spent per stage and phase (queue: waiting in the batcher; compute: engine run; total: whole RPC).",
    ("stage", "phase", "model"),
    buckets=_LATENCY_BUCKETS_S,
)
BATCH_SIZE = Histogram(
    "voxpipe_batch_size", "Requests per dispatched batch.", ("stage", "model"),
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_DEPTH = Gauge("voxpipe_queue_depth", "Requests waiting in the batcher.", ("stage", "model"))
REQUESTS_DROPPED = Counter(
    "voxpipe_batcher_dropped_total",
    "Requests that never ran: cancelled while queued, deadline passed, or rejected as the queue was full.",
    ("stage", "model", "reason"),
)
MODEL_INFO = Gauge(
    "voxpipe_model_info", "Where each loaded model runs (value 1): device, precision, backend, instances.",
    ("stage", "model", "device", "precision", "backend", "instances"),
)
