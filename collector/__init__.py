"""Agentwatch collector: durable ingest of AI coding agent events, metrics, query API, OTLP relay."""

__version__ = "0.1.0"
