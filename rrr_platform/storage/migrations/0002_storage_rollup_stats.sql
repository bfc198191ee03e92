-- Storage layer: incremental bar rollup bookkeeping, time-ordered trade index, query timings.

-- Minutes whose trades changed since they were last rolled up into market.bars_1m. The trade writer
-- marks every (venue, symbol, minute) of a batch in the same transaction as the trades; the rollup
-- claims and clears them (rrr_platform/storage/rollup.py describes the locking that keeps a minute
-- from being cleared while a write into it is still in flight).
CREATE TABLE market.bars_dirty (
    venue      text        NOT NULL,
    symbol     text        NOT NULL,
    minute     timestamptz NOT NULL,
    marked_at  timestamptz NOT NULL DEFAULT now(),
    claimed_by uuid,                 -- the rollup run computing it; a new write resets it to null
    PRIMARY KEY (venue, symbol, minute)
);

-- Time-ordered access per instrument: last price as of t, trades of a range, the rollup of a few
-- dirty minutes. The primary key (venue, symbol, trade_id, ts) cannot serve these.
CREATE INDEX trades_venue_symbol_ts ON market.trades (venue, symbol, ts);

-- Query latency histograms, merged across processes: each process adds its counts per bucket, so
-- p50/p99 over every process are read back from the sums (rrr_platform/storage/query_stats.py).
CREATE TABLE market.query_timings (
    name        text     NOT NULL,
    bucket      smallint NOT NULL,   -- upper bound = 10 µs * 2^(bucket / 4)
    count       bigint   NOT NULL,
    total_s     double precision NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, bucket)
);

-- sum(price * size) of a bar's trades: coarser bars get an exact VWAP from sums of 1-minute bars
-- (null for venue candles, which only give a VWAP).
ALTER TABLE market.bars_1m ADD COLUMN notional numeric;
