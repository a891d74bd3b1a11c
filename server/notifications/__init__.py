"""Notifications: who hears about what, through which channel, and what became of each message."""
