"""Upstream providers: the clients that place and track orders with other panels."""
