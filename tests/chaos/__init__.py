"""Chaos scenarios: real processes, injected faults, and what became of every alert."""
