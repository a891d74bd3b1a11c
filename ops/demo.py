"""``smm demo-provider``: the demo provider as a process of its own (``smm dev`` starts one)."""

from __future__ import annotations

import sys

from core.config import Settings
from core.logs import setup_logging
from demo.provider import DemoConfig
from demo.provider.main import run

DEFAULT_KEY = "demo-key"  # a local demo's key; `smm dev` generates one into var/dev-secrets.json


def run_demo_provider(settings: Settings, *, addr: str = "", step_s: float = 0.0) -> int:
    host, _, port = (addr or settings.demo_provider_addr).rpartition(":")
    if not host or not port.isdigit():
        print("smm demo-provider: give --addr HOST:PORT (or SMM_DEMO_PROVIDER_ADDR)", file=sys.stderr)
        return 2
    setup_logging("demo-provider", settings.log_level)
    key = settings.demo_provider_key.get_secret_value() or DEFAULT_KEY
    config = DemoConfig(api_keys=(key,), step_s=step_s or settings.demo_provider_step_s)
    run(host, int(port), config)
    return 0
