"""How many messages per second the exchange simulator pushes to one client on this machine.

The simulator runs in its own process (``rrr simulate --start recent``); each run opens one
WebSocket in rate mode (``?sim_rate=0&sim_count=N&sim_batch=B``: real model trades, pre-encoded,
written straight to the socket) and times first data frame -> last frame at the client. Scenarios:

- Polygon ``XT`` events batched 100 per frame (target >= 200,000 events/s)
- Binance ``trade``, one event per frame (target >= 100,000 frames/s)

Clients, to show the receive cost separately from the simulator's push rate:

- ``raw``: a socket reader that only walks WebSocket frame headers (close to the push rate itself)
- ``websockets``: the ``websockets`` library's ``recv()`` (what an ingest process pays at least)
- ``websockets+orjson``: the same plus ``orjson.loads`` of each frame

Baseline in the same run: the simulator sending each frame with aiohttp's ``ws.send_str``
(``sim_mode=naive``) instead of pre-encoded transport writes, received by the raw client.

Usage: ``.venv/bin/python benchmarks/sim_throughput.py [--quick]``. Writes
``benchmarks/results/sim_throughput.json``. Figures depend on machine load: both processes share
the machine's cores with whatever else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rrr_platform.simulator.server import start_subprocess

API_KEY = "bench"


def _client_frame(text: str) -> bytes:
    """A masked client text frame (RFC 6455 5.3); the mask is zero so the payload is unchanged."""
    payload = text.encode()
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
    return head + b"\0\0\0\0" + payload


class RawClient:
    """A minimal blocking WebSocket client: handshake, send text, count frames by walking headers."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(head.decode(errors="replace"))
        self.buf = bytearray(rest)

    def send(self, text: str) -> None:
        self.sock.sendall(_client_frame(text))

    def next_frame(self) -> bytes:
        while True:
            frame = self._parse_one()
            if frame is not None:
                return frame
            self.buf += self.sock.recv(1 << 20)

    def _parse_one(self) -> bytes | None:
        b = self.buf
        if len(b) < 2:
            return None
        n, off = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, off = struct.unpack_from("!H", b, 2)[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, off = struct.unpack_from("!Q", b, 2)[0], 10
        if len(b) < off + n:
            return None
        payload = bytes(b[off : off + n])
        del b[: off + n]
        return payload

    def count_frames(self, total: int) -> tuple[int, float, int]:
        """Count ``total`` frames (headers only); returns (frames, seconds from the first, bytes)."""
        frames, nbytes, started = 0, 0, 0.0
        buf = self.buf
        pos = 0
        while frames < total:
            if len(buf) - pos < 10:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    break
                if not started:
                    started = time.perf_counter()
                del buf[:pos]
                pos = 0
                buf += chunk
                nbytes += len(chunk)
                continue
            n, off = buf[pos + 1] & 0x7F, 2
            if n == 126:
                n, off = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif n == 127:
                n, off = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if len(buf) - pos < off + n:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    break
                del buf[:pos]
                pos = 0
                buf += chunk
                nbytes += len(chunk)
                continue
            pos += off + n
            frames += 1
        return frames, time.perf_counter() - started, nbytes

    def close(self) -> None:
        self.sock.close()


def polygon_setup(send: Any, recv: Any) -> None:
    recv()
    send(json.dumps({"action": "auth", "params": API_KEY}))
    recv()
    send(json.dumps({"action": "subscribe", "params": "XT.BTC-USD,XT.ETH-USD,XT.SOL-USD,XT.XRP-USD"}))
    for _ in range(4):
        recv()


def run_raw(host: str, port: int, scenario: dict[str, Any], naive: bool = False) -> dict[str, float]:
    query = f"sim_rate=0&sim_count={scenario['events']}&sim_batch={scenario['batch']}"
    if naive:
        query += "&sim_mode=naive"
    client = RawClient(host, port, f"{scenario['path']}?{query}")
    try:
        if scenario["venue"] == "polygon":
            polygon_setup(client.send, client.next_frame)
        frames_expected = -(-scenario["events"] // scenario["batch"])
        frames, seconds, nbytes = client.count_frames(frames_expected)
    finally:
        client.close()
    return {
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "events_per_s": frames * scenario["batch"] / seconds,
        "mb_per_s": nbytes / seconds / 1e6,
    }


async def run_websockets(host: str, port: int, scenario: dict[str, Any], decode: bool) -> dict[str, float]:
    query = f"sim_rate=0&sim_count={scenario['events']}&sim_batch={scenario['batch']}"
    frames_expected = -(-scenario["events"] // scenario["batch"])
    async with websockets.connect(
        f"ws://{host}:{port}{scenario['path']}?{query}", max_size=None, max_queue=4096, compression=None
    ) as ws:
        if scenario["venue"] == "polygon":
            await ws.recv()
            await ws.send(json.dumps({"action": "auth", "params": API_KEY}))
            await ws.recv()
            await ws.send(
                json.dumps({"action": "subscribe", "params": "XT.BTC-USD,XT.ETH-USD,XT.SOL-USD,XT.XRP-USD"})
            )
            for _ in range(4):
                await ws.recv()
        msg = await ws.recv()
        started = time.perf_counter()
        events = len(orjson.loads(msg)) if decode and scenario["batch"] > 1 else 1
        frames = 1
        while frames < frames_expected:
            msg = await ws.recv()
            frames += 1
            if decode:
                parsed = orjson.loads(msg)
                events += len(parsed) if isinstance(parsed, list) else 1
        seconds = time.perf_counter() - started
    return {
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "events_per_s": frames * scenario["batch"] / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    runs = args.runs or 3
    scale = 1 if args.quick else 3
    scenarios = [
        {
            "name": "polygon XT x100/frame",
            "venue": "polygon",
            "path": "/polygon/crypto",
            "batch": 100,
            "events": 200_000 * scale,
            "target": ("events_per_s", 200_000),
        },
        {
            "name": "binance trade x1/frame",
            "venue": "binance",
            "path": "/binance/ws/btcusdt@trade",
            "batch": 1,
            "events": 100_000 * scale,
            "target": ("frames_per_s", 100_000),
        },
    ]
    proc = start_subprocess(["--start", "recent", "--api-key", API_KEY], port=0)
    results: list[dict[str, Any]] = []
    try:
        host, port = proc.host, proc.port
        for sc in scenarios:
            # Warm the model's caches for these trades once, outside the timed runs.
            run_raw(host, port, {**sc, "events": min(sc["events"], 20_000)})
            per_client: dict[str, list[dict[str, float]]] = {
                "raw": [],
                "websockets": [],
                "websockets+orjson": [],
                "baseline send_str (raw client)": [],
            }
            for k in range(runs):
                print(f"  {sc['name']}: run {k + 1}/{runs}", file=sys.stderr, flush=True)
                per_client["raw"].append(run_raw(host, port, sc))
                per_client["websockets"].append(asyncio.run(run_websockets(host, port, sc, decode=False)))
                per_client["websockets+orjson"].append(
                    asyncio.run(run_websockets(host, port, sc, decode=True))
                )
                per_client["baseline send_str (raw client)"].append(run_raw(host, port, sc, naive=True))
            for client, rs in per_client.items():
                results.append(
                    {
                        "scenario": sc["name"],
                        "client": client,
                        "events": sc["events"],
                        "batch": sc["batch"],
                        "runs": len(rs),
                        "median_frames_per_s": statistics.median(r["frames_per_s"] for r in rs),
                        "median_events_per_s": statistics.median(r["events_per_s"] for r in rs),
                        "target": {sc["target"][0]: sc["target"][1]},
                    }
                )
    finally:
        proc.stop()

    print(f"{'scenario':<24} {'client':<32} {'frames/s':>12} {'events/s':>12} {'vs baseline':>12}")
    for r in results:
        base = next(
            x for x in results if x["scenario"] == r["scenario"] and x["client"].startswith("baseline")
        )
        ratio = r["median_events_per_s"] / base["median_events_per_s"]
        r["ratio_vs_send_str_baseline"] = ratio
        print(
            f"{r['scenario']:<24} {r['client']:<32} {r['median_frames_per_s']:>12,.0f} "
            f"{r['median_events_per_s']:>12,.0f} {ratio:>11.2f}x"
        )
    out = Path(__file__).resolve().parent / "results" / "sim_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "sim_throughput",
                "quick": args.quick,
                "runs": runs,
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "note": "medians; server and client are separate processes on one machine "
                "shared with other work, so figures vary with load",
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
