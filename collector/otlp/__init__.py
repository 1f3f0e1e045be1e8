"""The OTLP relay: committed events from the store, as OpenTelemetry logs and a trace per session,
to an OTLP receiver. relay (the loop, its cursor and backoff) -> logs, spans (building the
records) with ids (trace and span ids) -> export (the wire) behind breaker (the circuit)."""
