"""The PostgreSQL store's schema, as numbered steps per component (the SQLite store's idea).

Each component (the queue, the prospect store, the delivery history...) has its own list of
steps; `PostgresDatabase.open` brings every component to its last step, inside one transaction
holding an advisory lock, so nodes starting together migrate once and a failed step changes
nothing. Never edit a released step: append one.

Tables go into the connection's current schema (the first of `search_path`, `public` unless
the URL says otherwise), so one database can hold several installations side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

Step = Sequence[str]

_OPEN = "state IN ('pending', 'retry', 'leased')"

# Counts per state, kept by statement-level triggers so /metrics, /readyz and the backlog
# limit read a few rows instead of counting the table. Each counter is split over 16 rows
# (by the writing session), so nodes storing events at once do not queue on one row lock.
_COUNT_FUNCTIONS = (
    """CREATE FUNCTION events_counted_in() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
    BEGIN
        INSERT INTO event_counts (state, shard, n)
            SELECT state, pg_backend_pid() % 16, count(*) FROM new_rows
            GROUP BY state ORDER BY state
        ON CONFLICT (state, shard) DO UPDATE SET n = event_counts.n + excluded.n;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION events_counted_out() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
    BEGIN
        INSERT INTO event_counts (state, shard, n)
            SELECT state, pg_backend_pid() % 16, -count(*) FROM old_rows
            GROUP BY state ORDER BY state
        ON CONFLICT (state, shard) DO UPDATE SET n = event_counts.n + excluded.n;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION events_counted_move() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
    BEGIN
        INSERT INTO event_counts (state, shard, n)
            SELECT state, pg_backend_pid() % 16, sum(delta) FROM (
                SELECT o.state, -1 AS delta FROM old_rows o JOIN new_rows n USING (id)
                    WHERE o.state <> n.state
                UNION ALL
                SELECT n.state, 1 FROM old_rows o JOIN new_rows n USING (id)
                    WHERE o.state <> n.state
            ) moves
            GROUP BY state HAVING sum(delta) <> 0 ORDER BY state
        ON CONFLICT (state, shard) DO UPDATE SET n = event_counts.n + excluded.n;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER events_counted_in AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION events_counted_in()",
    "CREATE TRIGGER events_counted_out AFTER DELETE ON events REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION events_counted_out()",
    "CREATE TRIGGER events_counted_move AFTER UPDATE ON events"
    " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION events_counted_move()",
)

QUEUE: tuple[Step, ...] = (
    (
        """CREATE TABLE events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
            dedupe_scope text NOT NULL DEFAULT '',  -- who sent it; see webhook.py
            message_id text,
            ordering_key text,  -- the person: one lease at a time, in arrival order
            payload text NOT NULL,  -- the event as received (JSON text, kept verbatim)
            state text NOT NULL DEFAULT 'pending',
            attempts integer NOT NULL DEFAULT 0,
            received_at timestamptz NOT NULL,
            due_at timestamptz NOT NULL,  -- arrival, not_before, or the end of the lease
            reason text,
            settled_at timestamptz,
            lease_id text,
            UNIQUE (dedupe_scope, message_id)
        )""",
        # Leasing walks open events oldest first; then each chosen person's others.
        f"CREATE INDEX events_open ON events (id, due_at) WHERE {_OPEN}",
        f"CREATE INDEX events_open_by_key ON events (ordering_key, id) WHERE {_OPEN}",
        # Live leases: who is busy, and what a heartbeat renews.
        "CREATE INDEX events_leased ON events (lease_id) WHERE state = 'leased'",
        "CREATE INDEX events_by_state ON events (state, id)",
        "CREATE TABLE queue_settings (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE event_counts (
            state text NOT NULL, shard integer NOT NULL, n bigint NOT NULL,
            PRIMARY KEY (state, shard)
        )""",
        *_COUNT_FUNCTIONS,
    ),
)

PROSPECT_STORE: tuple[Step, ...] = (
    (
        "CREATE TABLE prospect_links (identity text PRIMARY KEY, prospect text NOT NULL)",
        "CREATE INDEX prospect_links_by_prospect ON prospect_links (prospect)",
        """CREATE TABLE prospect_fields (
            prospect text NOT NULL,
            field text NOT NULL,
            value text,  -- JSON
            set_at timestamptz,  -- the event time; NULL when unknown
            PRIMARY KEY (prospect, field)
        )""",
    ),
)

HISTORY: tuple[Step, ...] = (
    (
        """CREATE TABLE history (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL,  -- when it was settled
            outcome text NOT NULL,
            reason text NOT NULL,
            message_id text,
            user_id text,
            email text,  -- lower case
            prospect text,  -- the prospect store's key
            fields text NOT NULL,  -- JSON object: the fields this event wrote
            source text NOT NULL
        )""",
        "CREATE INDEX history_by_prospect ON history (prospect, id) WHERE prospect IS NOT NULL",
        "CREATE INDEX history_by_user ON history (user_id, id) WHERE user_id IS NOT NULL",
        "CREATE INDEX history_by_email ON history (email, id) WHERE email IS NOT NULL",
        "CREATE INDEX history_by_time ON history (at)",
        """CREATE TABLE history_minutes (
            minute timestamptz NOT NULL, outcome text NOT NULL, n bigint NOT NULL,
            PRIMARY KEY (minute, outcome)
        )""",
        """CREATE TABLE fields_seen (
            field text PRIMARY KEY, last_seen timestamptz NOT NULL, events bigint NOT NULL
        )""",
        "CREATE TABLE notes (key text PRIMARY KEY, value text NOT NULL)",
    ),
)

# Which Pardot slots are in use, beside their advisory locks (see PostgresSlots): a slot
# still marked in use when its lock comes free lost its holder in the middle of a call.
PARDOT_SLOTS: tuple[Step, ...] = (
    ("CREATE TABLE pardot_slots (key bigint PRIMARY KEY, in_use boolean NOT NULL)",),
)

PROSPECT_INDEX: tuple[Step, ...] = (
    (
        """CREATE TABLE prospect_index (
            id bigint PRIMARY KEY,
            email text,  -- lower case, for searching
            fid text,
            lookup text,  -- the lookup field's value as Pardot stores it
            data text NOT NULL  -- JSON: email as spelled, fields, created_at, updated_at
        )""",
        "CREATE INDEX prospect_index_by_email ON prospect_index (email)",
        "CREATE INDEX prospect_index_by_fid ON prospect_index (fid)",
        "CREATE INDEX prospect_index_by_lookup ON prospect_index (lookup)",
        "CREATE TABLE prospect_index_state (name text PRIMARY KEY, value text NOT NULL)",
    ),
)

# Pardot calls per account day: one counter row per day, added to by every node.
API_BUDGET: tuple[Step, ...] = (
    ("CREATE TABLE api_calls (day date PRIMARY KEY, used bigint NOT NULL)",),
)

# The account's import files per day (issue 23: 1,000 a day), added to by every node.
IMPORT_FILES: tuple[Step, ...] = (
    ("CREATE TABLE import_files (day date PRIMARY KEY, used bigint NOT NULL)",),
)

# Busy Pardot slot-seconds per 10-second bucket, added to by every node (`status` reads them).
SLOT_BUSY: tuple[Step, ...] = (
    ("CREATE TABLE slot_busy (bucket bigint PRIMARY KEY, seconds double precision NOT NULL)",),
)

# Forgotten people (issue 25): digests of their identities, never the email or id, and the
# salt they are made with, drawn once from PostgreSQL's strong random source (gen_random_uuid,
# 122 random bits each). A copy of the list kept without its salt suppresses nobody.
SUPPRESSION: tuple[Step, ...] = (
    (
        """CREATE TABLE suppressed (
            digest text PRIMARY KEY,  -- domain.forget.digest: HMAC-SHA256 under the salt
            added_at timestamptz NOT NULL DEFAULT now()
        )""",
        """CREATE TABLE suppression_salt (
            id integer PRIMARY KEY CHECK (id = 1),
            salt text NOT NULL  -- hex
        )""",
        "INSERT INTO suppression_salt (id, salt)"
        " VALUES (1, replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''))",
    ),
)

# The imports in flight (issue 23): found again by their events' ids after a restart. Rows
# keep digests of the match value and prospect key, never an email, and no field value.
IMPORT_LEDGER: tuple[Step, ...] = (
    (
        """CREATE TABLE import_ledger (
            import_id bigint PRIMARY KEY,  -- Pardot's id of the import
            match text NOT NULL,  -- the match column
            columns text NOT NULL,  -- JSON: the columns written (names, never values)
            finished boolean NOT NULL DEFAULT false
        )""",
        """CREATE TABLE import_ledger_rows (
            import_id bigint NOT NULL REFERENCES import_ledger ON DELETE CASCADE,
            event_id bigint NOT NULL,
            row_no integer NOT NULL,
            match text NOT NULL,  -- digest of the match value as sent
            prospect text NOT NULL,  -- digest of the prospect store's key
            prospect_id bigint,
            PRIMARY KEY (import_id, event_id)
        )""",
        "CREATE INDEX import_ledger_by_event ON import_ledger_rows (event_id)",
        "CREATE INDEX import_ledger_by_row ON import_ledger_rows (import_id, row_no)",
        "CREATE INDEX import_ledger_by_prospect ON import_ledger_rows (prospect)",
    ),
)

# In the order they are migrated: the history reads the prospect store's tables.
COMPONENTS: dict[str, tuple[Step, ...]] = {
    "queue": QUEUE,
    "prospect_store": PROSPECT_STORE,
    "history": HISTORY,
    "pardot_slots": PARDOT_SLOTS,
    "prospect_index": PROSPECT_INDEX,
    "api_budget": API_BUDGET,
    "slot_busy": SLOT_BUSY,
    "suppression": SUPPRESSION,
    "import_ledger": IMPORT_LEDGER,
    "import_files": IMPORT_FILES,
}
