"""Tocsin processor: the single writer of alert state."""
