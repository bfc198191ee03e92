-- Market data and ML bookkeeping schemas (DESIGN.md: PostgreSQL).
-- Time-series tables are range-partitioned by day on exchange time; partitions are created ahead by
-- rrr_platform.storage.partitions and dropped by retention. Prices and sizes are exact `numeric`.

CREATE SCHEMA IF NOT EXISTS market;
CREATE SCHEMA IF NOT EXISTS ml;

CREATE TABLE market.trades (
    ts              timestamptz NOT NULL,  -- exchange time (µs), the partition key
    venue           text        NOT NULL,
    symbol          text        NOT NULL,  -- canonical: BASE-QUOTE, or the equity ticker
    trade_id        text        NOT NULL,
    price           numeric     NOT NULL,
    size            numeric     NOT NULL,
    aggressor       text        NOT NULL CHECK (aggressor IN ('BUY', 'SELL', 'UNKNOWN')),
    exchange_ts_ns  bigint      NOT NULL,  -- ns precision of ts
    receive_ts_ns   bigint      NOT NULL,
    seq             bigint,
    is_replay       boolean     NOT NULL DEFAULT false,  -- snapshot or REST backfill
    source_exchange text,
    -- Idempotency: a replay or a backfill can never duplicate.
    PRIMARY KEY (venue, symbol, trade_id, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE market.quotes (
    ts              timestamptz NOT NULL,  -- venue quote time where sent, else receive time
    venue           text        NOT NULL,
    symbol          text        NOT NULL,
    bid_px          numeric,
    bid_sz          numeric,
    ask_px          numeric,
    ask_sz          numeric,
    exchange_ts_ns  bigint,
    receive_ts_ns   bigint      NOT NULL,
    seq             bigint,
    PRIMARY KEY (venue, symbol, ts, receive_ts_ns)
) PARTITION BY RANGE (ts);

CREATE TABLE market.bars_1m (
    ts           timestamptz NOT NULL,  -- start of the minute
    venue        text        NOT NULL,
    symbol       text        NOT NULL,
    open         numeric     NOT NULL,
    high         numeric     NOT NULL,
    low          numeric     NOT NULL,
    close        numeric     NOT NULL,
    volume       numeric     NOT NULL,
    vwap         numeric,
    trade_count  integer     NOT NULL,
    buy_volume   numeric,                -- null where the source (venue candles) does not say
    source       text        NOT NULL DEFAULT 'trades' CHECK (source IN ('trades', 'rest')),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue, symbol, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE market.dead_letters (
    id             bigserial   PRIMARY KEY,
    received_at    timestamptz NOT NULL,
    receive_ts_ns  bigint      NOT NULL,
    venue          text        NOT NULL,
    reason         text        NOT NULL,
    payload        bytea       NOT NULL,  -- the raw frame, byte for byte
    connection_id  text
);
CREATE INDEX dead_letters_venue_time ON market.dead_letters (venue, received_at);

CREATE TABLE market.gaps (
    id               bigserial   PRIMARY KEY,
    venue            text        NOT NULL,
    symbol           text        NOT NULL,
    scope            text        NOT NULL,  -- 'instrument' (trade ids) or 'connection' (sequence)
    first_missing    bigint      NOT NULL,
    last_missing     bigint      NOT NULL,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    backfilled_at    timestamptz,
    backfilled_count integer     NOT NULL DEFAULT 0,
    status           text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'backfilled', 'failed')),
    detail           text
);
CREATE INDEX gaps_venue_symbol ON market.gaps (venue, symbol, detected_at);

CREATE TABLE market.news (
    id            text        PRIMARY KEY,
    published_at  timestamptz NOT NULL,
    title         text        NOT NULL,
    description   text,
    publisher     text,
    url           text,
    tickers       text[]      NOT NULL DEFAULT '{}',
    sentiment     double precision,
    inserted_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX news_published ON market.news (published_at);

CREATE TABLE ml.predictions (
    ts       timestamptz      NOT NULL,
    symbol   text             NOT NULL,
    model    text             NOT NULL,
    version  text             NOT NULL,
    tier     text             NOT NULL CHECK (tier IN ('champion', 'previous', 'baseline')),
    value    double precision NOT NULL,
    PRIMARY KEY (model, symbol, ts)
);

-- Who moved which alias to which version, when and why: answers "which model served at time T".
CREATE TABLE ml.alias_history (
    id                bigserial   PRIMARY KEY,
    model             text        NOT NULL,
    alias             text        NOT NULL,
    version           text,
    previous_version  text,
    moved_at          timestamptz NOT NULL DEFAULT now(),
    moved_by          text        NOT NULL,
    reason            text        NOT NULL,
    metrics           jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX alias_history_model ON ml.alias_history (model, alias, moved_at);
