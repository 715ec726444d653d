"""Serving: the sans-I/O dream session and protocol, and the websocket server around it."""
