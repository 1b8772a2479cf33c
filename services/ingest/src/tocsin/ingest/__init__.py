"""Tocsin ingest: the producer API. Authenticates, validates and enqueues alerts."""
