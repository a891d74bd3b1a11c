"""A demo provider: a small server speaking the standard SMM panel protocol (PROTOCOL.md), with
orders that progress over time, faults on demand and signed status webhooks. State is in memory."""

from demo.provider.app import create_demo_app
from demo.provider.config import DemoConfig
from demo.provider.main import RunningDemo, run, start_demo_provider

__all__ = ["DemoConfig", "RunningDemo", "create_demo_app", "run", "start_demo_provider"]
