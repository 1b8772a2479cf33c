"""Tocsin gateway: WebSocket streaming of alert events and the dashboard API."""
