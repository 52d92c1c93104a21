"""Receivers: OTLP/gRPC and OTLP/HTTP (Kafka comes with its own issue).
Each hands raw request bytes to Pipeline.ingest and maps its outcome to the
protocol's answer (OTLP partial success, INVALID_ARGUMENT / HTTP 400)."""
