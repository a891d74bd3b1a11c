"""Sending text messages (SMS): plain-text templates and the transports that carry them."""
