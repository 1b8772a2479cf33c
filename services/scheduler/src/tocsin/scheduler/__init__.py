"""Tocsin scheduler."""
