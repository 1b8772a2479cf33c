"""Tocsin notifier."""
