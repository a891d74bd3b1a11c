"""Sending email: composing messages and the transports that carry them."""
