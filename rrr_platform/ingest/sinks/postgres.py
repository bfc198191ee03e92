"""PostgreSQL sink: nothing received is lost while PostgreSQL is slow, down or restarting.

Batches wait in a bounded in-memory buffer; past the bound they are spilled to msgpack files under
``spill_dir`` (and files left by a previous process are picked up at start). Writer tasks take the
oldest batch, write it with the storage layer's idempotent binary COPY, and on a connection error
keep that batch, reconnect with capped backoff, and write it again: a retried batch can never
duplicate, because every write is idempotent on the trade key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from pathlib import Path

import msgspec
import numpy as np
import psycopg

from rrr_platform.ingest.backoff import Backoff
from rrr_platform.ingest.batch import BATCH_DECODER, BATCH_ENCODER, Batch
from rrr_platform.ingest.metrics import IngestMetrics
from rrr_platform.market.types import DeadLetter
from rrr_platform.storage import writers

log = logging.getLogger(__name__)


class PostgresSink:
    def __init__(
        self,
        url: str,
        metrics: IngestMetrics,
        spill_dir: Path,
        *,
        max_buffered_records: int = 500_000,
        writer_tasks: int = 2,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.spill_dir = spill_dir
        self.max_buffered_records = max_buffered_records
        self.writer_tasks = writer_tasks
        self._memory: deque[Batch] = deque()
        self._memory_records = 0
        self._spilled: deque[Path] = deque()
        self._spill_seq = 0
        self._available = asyncio.Event()
        self._closing = False
        self._in_flight: dict[int, Batch] = {}  # writer index -> batch taken from memory
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = False

    # ------------------------------------------------------------------------------------ intake

    def submit(self, batch: Batch) -> None:
        """Never blocks the reader: past the memory bound the batch goes to disk."""
        if not len(batch):
            return
        if self._memory_records + len(batch) > self.max_buffered_records:
            self._spill(batch)
        else:
            self._memory.append(batch)
            self._memory_records += len(batch)
        self._available.set()

    def _spill(self, batch: Batch) -> None:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._spill_seq += 1
        path = self.spill_dir / f"{time.time_ns():020d}-{os.getpid()}-{self._spill_seq:08d}.msgpack"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(BATCH_ENCODER.encode(batch))
        tmp.rename(path)  # atomic: a crash never leaves a half file that looks complete
        self._spilled.append(path)
        for trade in batch.trades:
            self.metrics.inc("spilled", trade.venue, trade.symbol)

    def _adopt_spilled_files(self) -> None:
        if self.spill_dir.exists():
            for path in sorted(self.spill_dir.glob("*.msgpack")):
                if path not in self._spilled:
                    self._spilled.append(path)
        if self._spilled:
            log.info("found %d spilled batch file(s) in %s", len(self._spilled), self.spill_dir)
            self._available.set()

    @property
    def pending_records(self) -> int:
        return self._memory_records

    @property
    def pending_batches(self) -> int:
        return len(self._memory) + len(self._spilled) + len(self._in_flight)

    # ------------------------------------------------------------------------------------ writing

    async def start(self) -> None:
        self._adopt_spilled_files()
        self._tasks = [
            asyncio.create_task(self._writer(i), name=f"pg-writer-{i}") for i in range(self.writer_tasks)
        ]

    def _take(self) -> tuple[Batch, Path | None] | None:
        if self._memory:
            batch = self._memory.popleft()
            self._memory_records -= len(batch)
            return batch, None
        while self._spilled:
            path = self._spilled.popleft()
            try:
                return BATCH_DECODER.decode(path.read_bytes()), path
            except FileNotFoundError:  # another writer of this process already took it
                continue
        return None

    async def _writer(self, index: int) -> None:
        backoff = Backoff(initial=0.05, cap=5.0)
        conn: psycopg.AsyncConnection | None = None
        try:
            while True:
                item = self._take()
                if item is None:
                    if self._closing:
                        return
                    self._available.clear()
                    await self._available.wait()
                    continue
                batch, path = item
                if path is None:
                    self._in_flight[index] = batch
                while True:
                    try:
                        if conn is None or conn.closed:
                            conn = await psycopg.AsyncConnection.connect(
                                self.url, autocommit=True, connect_timeout=5
                            )
                            self.connected = True
                        await self._write(conn, batch)
                        backoff.reset()
                        break
                    except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                        self.connected = False
                        if conn is not None:
                            with contextlib.suppress(Exception):
                                await conn.close()
                        conn = None
                        delay = backoff.next_delay()
                        log.warning("PostgreSQL write failed (%s); retrying in %.2fs", exc, delay)
                        await asyncio.sleep(delay)
                    except psycopg.Error as exc:
                        # The data itself was refused (it passed validation, so this is rare):
                        # write row by row and dead-letter exactly the rows PostgreSQL rejects.
                        log.error("PostgreSQL refused a batch (%s); salvaging row by row", exc)
                        await self._write_salvage(conn, batch)
                        break
                # Only now is the batch safe: a cancelled write leaves it in _in_flight for close().
                self._in_flight.pop(index, None)
                if path is not None:
                    path.unlink(missing_ok=True)
        finally:
            if conn is not None:
                await conn.close()

    async def _write(self, conn: psycopg.AsyncConnection, batch: Batch) -> None:
        # Each part is cleared once committed, so a retry after a dropped connection writes only
        # what is left (and the stored/duplicate counts stay exact).
        if batch.trades:
            result = await writers.write_trades(conn, batch.trades)
            committed_ns = time.time_ns()
            self._count_trades(batch, result.duplicates)
            if not batch.backfill:
                receive = np.fromiter(
                    (t.receive_ts_ns for t in batch.trades), dtype=np.int64, count=len(batch.trades)
                )
                self.metrics.observe_latencies(
                    "receive_to_committed", batch.trades[0].venue, (committed_ns - receive) / 1e9
                )
            batch.trades = []
        if batch.quotes:
            result = await writers.write_quotes(conn, batch.quotes)
            self.metrics.inc("quotes_stored", batch.quotes[0].venue, "", result.inserted)
            batch.quotes = []
        if batch.dead_letters:
            await writers.write_dead_letters(conn, batch.dead_letters)
            batch.dead_letters = []

    async def _write_salvage(self, conn: psycopg.AsyncConnection | None, batch: Batch) -> None:
        assert conn is not None
        rejected: list[DeadLetter] = []
        for part in (
            *([Batch(trades=[t], backfill=batch.backfill)] for t in batch.trades),
            *([Batch(quotes=[q])] for q in batch.quotes),
            *([Batch(dead_letters=[d])] for d in batch.dead_letters),
        ):
            try:
                await self._write(conn, part)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                record = (part.trades or part.quotes or part.dead_letters)[0]
                rejected.append(
                    DeadLetter(
                        venue=record.venue,
                        reason=f"rejected by PostgreSQL: {exc}".strip()[:500],
                        payload=msgspec.json.encode(record),
                        receive_ts_ns=record.receive_ts_ns,
                        connection_id=record.connection_id,
                    )
                )
                self.metrics.inc("rejected", record.venue, getattr(record, "symbol", ""))
        if rejected:
            await writers.write_dead_letters(conn, rejected)

    def _count_trades(self, batch: Batch, duplicates: int) -> None:
        per_symbol: dict[tuple[str, str], int] = {}
        for trade in batch.trades:
            key = (trade.venue, trade.symbol)
            per_symbol[key] = per_symbol.get(key, 0) + 1
        # The writer reports duplicates per batch; attribute them to the batch's first symbol when a
        # batch mixes symbols (the totals, which the accounting checks use, stay exact).
        remaining_dupes = duplicates
        for (venue, symbol), n in per_symbol.items():
            dupes = min(n, remaining_dupes)
            remaining_dupes -= dupes
            self.metrics.inc("stored", venue, symbol, n - dupes)
            self.metrics.inc("duplicates", venue, symbol, dupes)

    async def close(self, timeout: float = 60.0) -> bool:
        """Write everything pending; True when all of it is committed (or safely spilled)."""
        self._closing = True
        self._available.set()
        done, pending = await asyncio.wait(self._tasks, timeout=timeout) if self._tasks else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        # What could not be written in time goes to disk for the next run; a batch cut off mid-write
        # is spilled too (writing it again later is idempotent).
        for batch in list(self._in_flight.values()):
            self._spill(batch)
        self._in_flight.clear()
        while self._memory:
            batch = self._memory.popleft()
            self._memory_records -= len(batch)
            self._spill(batch)
        for task in done:
            if task.exception() is not None:
                log.error("PostgreSQL writer failed: %r", task.exception())
        return not pending
