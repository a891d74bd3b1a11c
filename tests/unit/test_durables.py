"""Where each worker's durables start when they are created on a stream that already holds events."""

from __future__ import annotations

from core.config import Settings
from workers.main import CONSUMERS
from workers.rpc import open_channel

NOTIFYING = {"email", "sms"}
# Dead letters of order events older than an hour when the retry durable is first created are
# staff's (workers/dispatch.py).
OWN_WINDOWS = {"dispatch-dead-orders": 3600.0}


async def test_notification_durables_start_at_the_window_and_the_others_take_everything() -> None:
    """A notification about last week's order (or a reset link nobody waits for) is wrong; an
    order dispatch worker that skipped last week's orders would lose them, and analytics counts
    each event once whenever it comes. The dispatch retry of dead letters takes only the last
    hour's: older ones staff have had the alerts of."""
    settings = Settings(notify_start_window_s=1234.0, grpc_target="127.0.0.1:1")
    for name, build in CONSUMERS.items():
        rpc = open_channel(settings, name)
        try:
            windows = {
                consumer.durable.name: consumer.durable.start_window_s for consumer in build(rpc, settings)
            }
        finally:
            await rpc.channel.close()
        expected = 1234.0 if name in NOTIFYING else None
        assert windows == {d: OWN_WINDOWS.get(d, expected) for d in windows}, name
        assert windows, name
