-- Which (venue, symbol, day) the REST history backfill has completed: a rerun or a resumed
-- partition range skips finished work (the writes themselves are idempotent either way).
CREATE TABLE market.history_progress (
    venue        text        NOT NULL,
    symbol       text        NOT NULL,
    day          date        NOT NULL,
    bars         integer     NOT NULL,
    trades       integer     NOT NULL DEFAULT 0,
    completed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue, symbol, day)
);
