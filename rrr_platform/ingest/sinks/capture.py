"""Raw capture: every frame as received, with its receive time, in rotating gzip files.

A record is ``[receive_ts_ns, venue, connection_id, frame]`` encoded with msgpack (``frame`` is the
``str`` or ``bytes`` exactly as it came off the socket). msgpack has no self-delimiting stream reader
in msgspec, so each record is preceded by its length as a 4-byte big-endian integer; the gzip member
holds ``len | record | len | record ...``.

Files are named ``<shard>-<start_ns:020d>-<seq:06d>.rrrcap.gz`` so that sorting names sorts them by
time within a shard. One writer per shard (not thread-safe, not shared between processes). A file is
closed and a new one opened when it reaches ``max_bytes`` (uncompressed) or ``max_age_s``. A reader
iterates records across files in order; a truncated last record (a writer killed mid-write) ends that
file's iteration without raising, and the count of such truncations is kept.
"""

from __future__ import annotations

import gzip
import heapq
import os
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import msgspec

SUFFIX = ".rrrcap.gz"
_LEN = struct.Struct(">I")


class CaptureRecord(msgspec.Struct, array_like=True, gc=False):
    receive_ts_ns: int
    venue: str
    connection_id: str
    frame: Any  # str or bytes as received (msgspec cannot type a str | bytes union; msgpack keeps the kind)


class CaptureWriter:
    """Append records to ``directory``; rotate by size or age. Use as a context manager or call close()."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        shard: str = "capture",
        max_bytes: int = 256 * 1024 * 1024,
        max_age_s: float = 3600.0,
        compresslevel: int = 1,
    ) -> None:
        if "-" in shard or "/" in shard:
            raise ValueError(f"shard name {shard!r} must not contain '-' or '/'")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shard = shard
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.compresslevel = compresslevel
        self._encoder = msgspec.msgpack.Encoder()
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._bytes = 0
        self._opened_at = 0.0
        self._seq = 0
        self.files: list[Path] = []
        self.records_written = 0

    def _open(self, first_ts_ns: int) -> None:
        self._seq += 1
        self._path = self.directory / f"{self.shard}-{first_ts_ns:020d}-{self._seq:06d}{SUFFIX}"
        # Kept open across write() calls until rotation, so no context manager here.
        self._file = gzip.open(self._path, "wb", compresslevel=self.compresslevel)  # noqa: SIM115
        self._bytes = 0
        self._opened_at = time.monotonic()
        self.files.append(self._path)

    def write(self, receive_ts_ns: int, venue: str, connection_id: str, frame: str | bytes) -> None:
        if self._file is not None and (
            self._bytes >= self.max_bytes or time.monotonic() - self._opened_at >= self.max_age_s
        ):
            self.rotate()
        if self._file is None:
            self._open(receive_ts_ns)
        assert self._file is not None
        body = self._encoder.encode((receive_ts_ns, venue, connection_id, frame))
        self._file.write(_LEN.pack(len(body)))
        self._file.write(body)
        self._bytes += len(body) + 4
        self.records_written += 1

    def write_many(self, records: Iterable[tuple[int, str, str, str | bytes]]) -> None:
        for rec in records:
            self.write(*rec)

    def rotate(self) -> None:
        """Close the current file; the next write opens a new one."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        self.rotate()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def capture_files(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Capture files under a directory (or the given files), sorted by name (= shard, time)."""
    if isinstance(paths, str | os.PathLike):
        root = Path(paths)
        return sorted(root.glob(f"*{SUFFIX}")) if root.is_dir() else [root]
    out: list[Path] = []
    for p in paths:
        out.extend(capture_files(p))
    return sorted(out)


class CaptureReader:
    """Iterate records of one or more capture files.

    ``CaptureReader(dir)`` yields each shard's records file by file; ``merged()`` yields the records
    of all shards in receive-time order (a k-way merge; each shard's files are already in order).
    """

    def __init__(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> None:
        self.files = capture_files(paths)
        self._decoder = msgspec.msgpack.Decoder(CaptureRecord)
        self.truncated_files: list[Path] = []

    def read_file(self, path: Path) -> Iterator[CaptureRecord]:
        with gzip.open(path, "rb") as fh:
            while True:
                try:
                    head = fh.read(4)
                except EOFError:  # gzip stream cut short: the writer died mid-write
                    self.truncated_files.append(path)
                    return
                if not head:
                    return
                try:
                    body = fh.read(_LEN.unpack(head)[0]) if len(head) == 4 else b""
                except EOFError:
                    body = b""
                if len(head) < 4 or len(body) < _LEN.unpack(head.ljust(4, b"\0"))[0]:
                    self.truncated_files.append(path)
                    return
                yield self._decoder.decode(body)

    def __iter__(self) -> Iterator[CaptureRecord]:
        for path in self.files:
            yield from self.read_file(path)

    def merged(self) -> Iterator[CaptureRecord]:
        by_shard: dict[str, list[Path]] = {}
        for path in self.files:
            by_shard.setdefault(path.name.split("-", 1)[0], []).append(path)
        streams = [self._chain(files) for files in by_shard.values()]
        yield from heapq.merge(*streams, key=lambda r: r.receive_ts_ns)

    def _chain(self, files: list[Path]) -> Iterator[CaptureRecord]:
        for path in files:
            yield from self.read_file(path)
