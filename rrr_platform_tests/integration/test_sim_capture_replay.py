"""Raw capture files, replay over the venue protocol, rate mode, and the ways to start the simulator."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets

from rrr_platform.ingest.sinks.capture import CaptureReader, CaptureWriter
from rrr_platform.market.types import BINANCE, POLYGON
from rrr_platform.simulator.server import ReplaySpec, SimulatorConfig, SimulatorServer, start_subprocess
from rrr_platform.simulator.testing import shared_model

pytestmark = pytest.mark.integration


def sim(**overrides: Any) -> SimulatorServer:
    return SimulatorServer(
        SimulatorConfig(port=0, tick_s=0.05, **overrides), model=shared_model(7, "none", 5.0)
    )


def test_capture_rotates_and_reads_back_in_order(tmp_path: Path) -> None:
    records = [
        (1_000 + i, BINANCE if i % 2 else POLYGON, f"c{i % 3}", f'{{"n":{i}}}' if i % 5 else bytes([i % 256]))
        for i in range(2000)
    ]
    with CaptureWriter(tmp_path, shard="bn", max_bytes=4096) as w:
        w.write_many(records)
    assert len(w.files) > 3 and all(p.exists() for p in w.files)
    got = [(r.receive_ts_ns, r.venue, r.connection_id, r.frame) for r in CaptureReader(tmp_path)]
    assert got == records
    with CaptureWriter(tmp_path, shard="pg") as w2:
        w2.write(1_500, POLYGON, "x", "late")
        w2.write(999, POLYGON, "x", "early")  # one shard's own order is kept as written
    merged = [r.receive_ts_ns for r in CaptureReader(tmp_path).merged()]
    assert len(merged) == 2002 and merged[0] == 1_000 and 1_500 in merged
    with pytest.raises(ValueError):
        CaptureWriter(tmp_path, shard="a-b")


def test_capture_reader_survives_a_truncated_file(tmp_path: Path) -> None:
    with CaptureWriter(tmp_path, shard="s", compresslevel=0) as w:
        for i in range(100):
            w.write(i, BINANCE, "c", "x" * 50)
    path = w.files[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 300])  # a writer killed mid-write
    reader = CaptureReader(tmp_path)
    got = list(reader)
    assert 0 < len(got) < 100 and [r.receive_ts_ns for r in got] == list(range(len(got)))
    assert reader.truncated_files == [path]
    with gzip.open(path, "rb") as fh, pytest.raises(EOFError):
        fh.read()


async def test_replay_streams_a_capture_at_n_times_speed(tmp_path: Path) -> None:
    frames = [json.dumps({"e": "trade", "t": i}) for i in range(10)]
    with CaptureWriter(tmp_path, shard="bn") as w:
        for i, f in enumerate(frames):
            w.write(1_000_000_000 + i * 100_000_000, BINANCE, "c1", f)  # 100 ms apart: 0.9 s of capture
        w.write(1_000_000_000, POLYGON, "c2", "[]")
    async with (
        sim(replay=ReplaySpec(str(tmp_path), speed=10.0)) as s,
        websockets.connect(f"{s.url('binance')}/ws/btcusdt@trade") as ws,
    ):
        started = time.monotonic()
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in frames]
        fast = time.monotonic() - started
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), 5)
    assert got == frames and fast < 0.6
    async with (
        sim(replay=ReplaySpec(str(tmp_path), speed=1.0)) as s,
        websockets.connect(f"{s.url('binance')}/ws/btcusdt@trade") as ws,
    ):
        started = time.monotonic()
        for _ in range(5):
            await asyncio.wait_for(ws.recv(), 5)
        assert time.monotonic() - started >= 0.35  # 4 gaps of 100 ms at real speed


async def test_rate_mode_pushes_the_requested_events_in_batched_frames() -> None:
    async with sim(polygon_api_key="k") as s:
        async with websockets.connect(
            f"{s.url('polygon')}?sim_rate=0&sim_count=3000&sim_batch=100", max_size=None
        ) as ws:
            await ws.recv()
            await ws.send(json.dumps({"action": "auth", "params": "k"}))
            await ws.recv()
            await ws.send(json.dumps({"action": "subscribe", "params": "XT.ETH-USD"}))
            await ws.recv()
            batches = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(30)]
        ids = [int(e["i"]) for b in batches for e in b]
        assert all(len(b) == 100 for b in batches) and ids == list(range(ids[0], ids[0] + 3000))
        async with websockets.connect(
            f"{s.url('binance')}/ws/btcusdt@trade?sim_rate=1000&sim_count=300"
        ) as ws:
            started = time.monotonic()
            got = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(300)]
            elapsed = time.monotonic() - started
        assert [g["t"] for g in got] == list(range(got[0]["t"], got[0]["t"] + 300))
        assert elapsed >= 0.2  # paced at 1000 frames/s, not dumped at once
        assert s.accounting.account(POLYGON, "ETH-USD").streamed.ranges() == [[ids[0], ids[-1]]]


def test_in_thread_and_subprocess_start() -> None:
    server = SimulatorServer(SimulatorConfig(port=0), model=shared_model(7)).start_in_thread()
    try:
        with urllib.request.urlopen(f"{server.base_http}/_sim/info", timeout=10) as r:
            info = json.loads(r.read())
        assert info["seed"] == 7 and "binance ws" in info["endpoints"]
    finally:
        server.stop_thread()
    proc = start_subprocess(["--start", "recent", "--seed", "3"], port=0)
    try:
        text = "\n".join(proc.banner)
        assert "binance ws" in text and "polygon rest" in text and "seed 3" in text
        with urllib.request.urlopen(
            f"{proc.rest_url('binance')}/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=2", timeout=30
        ) as r:
            assert len(json.loads(r.read())) == 2
    finally:
        proc.stop()
    assert proc.proc.returncode == 0
