"""Replay a raw capture (``rrr_platform.ingest.sinks.capture``) over the venue's WebSocket path.

With ``SimulatorConfig(replay=ReplaySpec(path, speed))`` every WebSocket connection gets, instead of
the model's data, the captured frames of its venue (or of ``spec.venue`` / ``spec.connection_id``)
in receive-time order, exactly as captured (text or binary), spaced by their original receive times
divided by ``speed`` (``0``: as fast as possible). Captured frames already contain the venue's own
handshake and acks, so the client's messages are read and ignored. The connection is closed
(code 1000) after the last frame.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rrr_platform.ingest.sinks.capture import CaptureReader
from rrr_platform.simulator.session import Session


class ReplaySession(Session):
    def __init__(self, *args: Any, venue: str, **kwargs: Any) -> None:
        self.venue = venue
        super().__init__(*args, **kwargs)
        self.client_messages: list[str] = []

    async def on_open(self) -> None:
        self._tasks.append(asyncio.create_task(self._replay()))

    async def on_text(self, text: str) -> None:
        self.client_messages.append(text)

    async def pump(self, now_ns: int) -> None:
        return None

    async def _replay(self) -> None:
        spec = self.config.replay
        assert spec is not None
        venue = spec.venue or self.venue
        speed = spec.speed
        first_ts: int | None = None
        started = time.monotonic()
        sent = 0
        for rec in CaptureReader(spec.path).merged():
            if self.closed:
                return
            if rec.venue != venue or (spec.connection_id and rec.connection_id != spec.connection_id):
                continue
            if first_ts is None:
                first_ts = rec.receive_ts_ns
            if speed > 0:
                due = started + (rec.receive_ts_ns - first_ts) / 1e9 / speed
                lag = due - time.monotonic()
                if lag > 0:
                    await asyncio.sleep(lag)
            elif sent % 256 == 0:
                await asyncio.sleep(0)  # let the client's reads interleave
            try:
                if isinstance(rec.frame, bytes):
                    await self.ws.send_bytes(rec.frame)
                else:
                    await self.ws.send_str(rec.frame)
            except ConnectionResetError:
                return
            sent += 1
            self.frames_sent += 1
        self.info["replayed"] = sent
        await self.close(1000, "replay finished")
