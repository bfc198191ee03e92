"""Rate mode for benchmarks: push pre-encoded frames at a given rate, or as fast as the socket takes them.

A WebSocket URL with ``?sim_rate=<frames/s, 0 = max>&sim_count=<events>&sim_batch=<events per frame>``
(any venue) makes the connection, once subscribed, send ``sim_count`` real model trades of its
subscribed symbols in that venue's format, then stay open and idle. Frames are built and encoded to
WebSocket wire bytes before the clock starts and written straight to the transport in large chunks:
going through ``ws.send_str`` per frame costs ~10 µs each in Python and would make the simulator the
bottleneck of the ingest benchmarks. Server frames are unmasked (RFC 6455 5.1), so the encoding is
a 2-10 byte header before the payload; that is all this module writes by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rrr_platform.simulator.session import Session

_OP_TEXT = 0x81  # FIN + text opcode
HIGH_WATER = 1024 * 1024
CHUNK_BYTES = 256 * 1024


def ws_text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((_OP_TEXT, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", _OP_TEXT, 126, n) + payload
    return struct.pack("!BBQ", _OP_TEXT, 127, n) + payload


def encode_frames(texts: list[str]) -> list[bytes]:
    return [ws_text_frame(t.encode()) for t in texts]


async def _drain(session: Session) -> None:
    transport = session.request.transport
    if transport is None:
        return
    protocol: Any = session.request.protocol
    helper = getattr(protocol, "_drain_helper", None)
    while transport.get_write_buffer_size() > HIGH_WATER and not transport.is_closing():
        if helper is not None:  # waits while the transport has paused writing (returns at once if not)
            with contextlib.suppress(Exception):
                await helper()
        # Always yield: the helper may return without suspending, and the loop must run to flush.
        await asyncio.sleep(0.0005)


async def push(session: Session, frames: list[bytes], rate: float) -> dict[str, float]:
    """Write ``frames``; ``rate`` frames/s (0 = as fast as possible). Returns timing figures."""
    transport = session.request.transport
    if transport is None or transport.is_closing():
        return {"frames": 0, "seconds": 0.0}
    started = time.perf_counter()
    sent = 0
    if rate <= 0:
        # Join frames into writes of about CHUNK_BYTES: few syscalls for small frames, no large copies
        # for big (batched) ones.
        pending: list[bytes] = []
        size = 0
        for frame in frames:
            pending.append(frame)
            size += len(frame)
            if size >= CHUNK_BYTES:
                if transport.is_closing():
                    break
                transport.write(b"".join(pending))
                sent += len(pending)
                pending, size = [], 0
                await _drain(session)
        if pending and not transport.is_closing():
            transport.write(b"".join(pending))
            sent += len(pending)
    else:
        # Pace in 1 ms steps: write every frame that is due, then sleep until the next one is.
        while sent < len(frames) and not transport.is_closing():
            due = min(len(frames), int((time.perf_counter() - started) * rate) + 1)
            if due > sent:
                transport.write(b"".join(frames[sent:due]))
                sent = due
                await _drain(session)
            else:
                await asyncio.sleep(max(0.0, (sent + 1) / rate - (time.perf_counter() - started)))
    elapsed = time.perf_counter() - started
    session.frames_sent += sent
    return {"frames": sent, "seconds": elapsed, "frames_per_s": sent / elapsed if elapsed > 0 else 0.0}


async def push_naive(session: Session, texts: list[str]) -> dict[str, float]:
    """Baseline for the benchmark: aiohttp's ``send_str`` per frame, as the live path sends."""
    started = time.perf_counter()
    sent = 0
    for text in texts:
        if session.closed:
            break
        await session.ws.send_str(text)
        sent += 1
    elapsed = time.perf_counter() - started
    session.frames_sent += sent
    return {"frames": sent, "seconds": elapsed, "frames_per_s": sent / elapsed if elapsed > 0 else 0.0}
