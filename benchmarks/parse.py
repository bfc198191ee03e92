"""How fast the venue adapters parse and normalize frames, against a bare JSON decode of the same frames.

    .venv/bin/python benchmarks/parse.py [--quick]

For each frame kind, a deterministic stream of realistic frames (prices on a random walk over the
tick grid, so levels recur as in a market; sizes with 5-8 significant digits, nearly all distinct)
is parsed by the venue's ``parse`` into ``Trade``/``Quote`` records with exact decimals and ns
times. Baseline, measured in the same run, interleaved round by round: ``msgspec.json.decode`` of
the same frames into Python objects (no types, no Decimal, no records). The Decimal cache of the
adapters is emptied before every round, so repeated prices are hits only within one stream, as live.
Reports the median of the rounds, per second of the thread's CPU time (the fair "one core" figure
on a shared machine; wall-clock rates are in the JSON too): frames/s, records/s, and parse time /
bare decode time. Single-threaded. Writes benchmarks/results/parse.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from rrr_platform.venues import base, binance, coinbase, polygon

T0_MS = 1_767_225_600_000


def _walk(n: int, seed: int, start_ticks: int) -> list[tuple[int, float, bool]]:
    rng = random.Random(seed)
    ticks, out = start_ticks, []
    for _ in range(n):
        ticks += rng.choice((-2, -1, 0, 0, 0, 1, 2))
        out.append((ticks, rng.expovariate(20.0), rng.random() < 0.5))
    return out


def binance_trades(n: int, combined: bool, micro: bool = False) -> list[bytes]:
    frames = []
    scale = 1000 if micro else 1
    for i, (ticks, size, maker) in enumerate(_walk(n, 1, 9_421_001)):
        t = (T0_MS + i) * scale
        event = (
            f'{{"e":"trade","E":{t + 2 * scale},"s":"BTCUSDT","t":{5_123_456_789 + i},'
            f'"p":"{ticks // 100}.{ticks % 100:02d}000000","q":"{size:.8f}","T":{t},'
            f'"m":{"true" if maker else "false"},"M":true}}'
        )
        frames.append((f'{{"stream":"btcusdt@trade","data":{event}}}' if combined else event).encode())
    return frames


def binance_book(n: int) -> list[bytes]:
    frames = []
    for i, (ticks, size, _) in enumerate(_walk(n, 2, 9_421_000)):
        event = (
            f'{{"u":{62_345_678_901 + 3 * i},"s":"BTCUSDT","b":"{ticks // 100}.{ticks % 100:02d}000000",'
            f'"B":"{size:.8f}","a":"{(ticks + 1) // 100}.{(ticks + 1) % 100:02d}000000",'
            f'"A":"{size / 3:.8f}"}}'
        )
        frames.append(f'{{"stream":"btcusdt@bookTicker","data":{event}}}'.encode())
    return frames


def coinbase_matches(n: int) -> list[bytes]:
    frames = []
    for i, (ticks, size, maker_sell) in enumerate(_walk(n, 3, 9_421_001)):
        us = (T0_MS + i) * 1000 + i % 1000
        seconds, frac = divmod(us, 1_000_000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:06d}Z"
        frames.append(
            (
                f'{{"type":"match","trade_id":{734_680_346 + i},"sequence":{93_526_013_154 + 7 * i},'
                f'"maker_order_id":"ac928c66-ca53-498f-9c13-a110027a60e8",'
                f'"taker_order_id":"132fb6ae-456b-4654-b4e0-d681ac05cea1","time":"{stamp}",'
                f'"product_id":"BTC-USD","size":"{size:.8f}","price":"{ticks // 100}.{ticks % 100:02d}",'
                f'"side":"{"sell" if maker_sell else "buy"}"}}'
            ).encode()
        )
    return frames


def coinbase_at_trades(n: int, per_frame: int) -> list[bytes]:
    frames, walk = [], _walk(n * per_frame, 4, 9_421_001)
    for f in range(n):
        trades = []
        for j in range(per_frame):
            i = f * per_frame + j
            ticks, size, side = walk[i]
            trades.append(
                f'{{"trade_id":"{912_345_678 + i}","product_id":"BTC-USD",'
                f'"price":"{ticks // 100}.{ticks % 100:02d}","size":"{size:.8f}",'
                f'"side":"{"SELL" if side else "BUY"}","time":"2026-03-02T15:04:05.{i % 999999:06d}Z"}}'
            )
        frames.append(
            (
                f'{{"channel":"market_trades","client_id":"","timestamp":"2026-03-02T15:04:05.4Z",'
                f'"sequence_num":{f},"events":[{{"type":"update","trades":[{",".join(trades)}]}}]}}'
            ).encode()
        )
    return frames


def polygon_xt(n: int, per_frame: int) -> list[bytes]:
    frames, walk = [], _walk(n * per_frame, 5, 9_421_001)
    for f in range(n):
        events = []
        for j in range(per_frame):
            i = f * per_frame + j
            ticks, size, side = walk[i]
            t = T0_MS + i // 10
            events.append(
                f'{{"ev":"XT","pair":"BTC-USD","p":{ticks // 100}.{ticks % 100:02d},"t":{t},"s":{size:.6f},'
                f'"c":[{2 if side else 1}],"i":"{912_345_678 + i}","x":1,"r":{t + 9}}}'
            )
        frames.append(("[" + ",".join(events) + "]").encode())
    return frames


def _run(fn: Callable[[bytes], Any], frames: list[bytes]) -> tuple[float, float]:
    """(CPU seconds of this thread, wall seconds). CPU time leaves out the time the scheduler gave
    the core to other processes, so it is the fairer "one core" figure on a shared machine."""
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    for frame in frames:
        fn(frame)
    return time.thread_time() - cpu0, time.perf_counter() - wall0


def measure(
    name: str, parse: Callable[..., base.ParseResult], frames: list[bytes], rounds: int
) -> dict[str, Any]:
    sample = parse(frames[0], 1)
    assert not sample.dead_letters, sample.dead_letters
    records_per_frame = sum(len(parse(f, 1).trades) + len(parse(f, 1).quotes) for f in frames[:50]) / 50
    decode = msgspec.json.decode
    now = time.time_ns()
    bare_runs, parse_runs = [], []
    for _ in range(rounds):  # interleaved, so drifting contention hits both alike
        bare_runs.append(_run(decode, frames))
        parse_runs.append(_run(lambda f: parse(f, now, "bench", 0), frames))
    bare_cpu = statistics.median(r[0] for r in bare_runs)
    parse_cpu = statistics.median(r[0] for r in parse_runs)
    parse_wall = statistics.median(r[1] for r in parse_runs)
    n = len(frames)
    return {
        "kind": name,
        "frames": n,
        "rounds": rounds,
        "records_per_frame": records_per_frame,
        "bare_decode_frames_per_cpu_s": n / bare_cpu,
        "parse_frames_per_cpu_s": n / parse_cpu,
        "parse_records_per_cpu_s": n * records_per_frame / parse_cpu,
        "parse_over_bare": parse_cpu / bare_cpu,
        "parse_frames_per_wall_s": n / parse_wall,
        "parse_frames_per_cpu_s_all_rounds": sorted(n / r[0] for r in parse_runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and rounds (a smoke run)")
    args = parser.parse_args()
    n, rounds = (20_000, 3) if args.quick else (100_000, 7)
    cases = [
        ("binance trade, combined stream", binance.parse, binance_trades(n, combined=True)),
        ("binance trade, raw stream", binance.parse, binance_trades(n, combined=False)),
        ("binance trade, combined, µs times", binance.parse, binance_trades(n, combined=True, micro=True)),
        ("binance bookTicker, combined", binance.parse, binance_book(n)),
        ("coinbase exchange match", coinbase.parse, coinbase_matches(n)),
        ("coinbase AT market_trades x5", coinbase.parse_advanced_trade, coinbase_at_trades(n // 5, 5)),
        ("polygon XT x100 per frame", polygon.parse, polygon_xt(max(20, n // 100), 100)),
    ]
    results = []
    print("per second of CPU time of the one benchmark thread (wall-clock figure in the JSON)")
    print(f"{'frames':<38}{'bare decode/s':>15}{'parse frames/s':>16}{'records/s':>13}{'parse/bare':>12}")
    for name, fn, frames in cases:
        row = measure(name, fn, frames, rounds)
        results.append(row)
        print(
            f"{name:<38}{row['bare_decode_frames_per_cpu_s']:>15,.0f}{row['parse_frames_per_cpu_s']:>16,.0f}"
            f"{row['parse_records_per_cpu_s']:>13,.0f}{row['parse_over_bare']:>12.2f}"
        )
    out = {
        "benchmark": "parse",
        "quick": args.quick,
        "python": platform.python_version(),
        "msgspec": msgspec.__version__,
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "note": (
            "medians of interleaved rounds on one core; the machine is shared: figures are under contention"
        ),
        "results": results,
    }
    path = Path(__file__).parent / "results" / "parse.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
