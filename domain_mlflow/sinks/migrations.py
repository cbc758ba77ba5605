"""Numbered schema migrations of the config store, applied in order on start.

Each migration is a list of statements with ``{id}`` (auto-increment key) and
``{ts}`` (timestamp type) filled in per dialect. Never edit an applied migration:
add the next number.
"""

from __future__ import annotations

from domain_mlflow.sinks.database import Database, utc_now

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "domain configs, their history, promotions, webhook deliveries", [
        """CREATE TABLE domain_configs (
            domain_id TEXT PRIMARY KEY,
            model_version TEXT NOT NULL,
            registered_model TEXT NOT NULL,
            registry_version INTEGER NOT NULL,
            previous_registry_version INTEGER,
            model_uri TEXT NOT NULL,
            serving_name TEXT NOT NULL,
            training_run_id TEXT,
            metrics TEXT NOT NULL,
            version_number INTEGER NOT NULL,
            updated_at {ts} NOT NULL
        )""",
        """CREATE TABLE promotions (
            id {id},
            request_key TEXT NOT NULL UNIQUE,
            domain_id TEXT NOT NULL,
            registry_version INTEGER NOT NULL,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            model_version TEXT,
            model_uri TEXT,
            run_id TEXT,
            training_run_id TEXT,
            metrics TEXT NOT NULL,
            decision TEXT,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            targets TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            next_attempt_at {ts} NOT NULL,
            created_at {ts} NOT NULL,
            updated_at {ts} NOT NULL
        )""",
        "CREATE INDEX promotions_open ON promotions (state, next_attempt_at)",
        "CREATE INDEX promotions_domain ON promotions (domain_id, id)",
        """CREATE TABLE domain_config_history (
            id {id},
            domain_id TEXT NOT NULL,
            action TEXT NOT NULL,
            registry_version INTEGER NOT NULL,
            model_version TEXT,
            previous_registry_version INTEGER,
            version_number INTEGER,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            metrics TEXT NOT NULL,
            promotion_id INTEGER NOT NULL,
            created_at {ts} NOT NULL,
            UNIQUE (promotion_id, action)
        )""",
        "CREATE INDEX history_domain ON domain_config_history (domain_id, id)",
        """CREATE TABLE webhook_deliveries (
            delivery_id TEXT PRIMARY KEY,
            event TEXT NOT NULL,
            received_at {ts} NOT NULL
        )""",
    ]),
    (2, "serving requests and alerts", [
        """CREATE TABLE serving_requests (
            id {id},
            domain_id TEXT NOT NULL,
            model_version TEXT,
            serving_name TEXT NOT NULL,
            started_at {ts} NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            status TEXT NOT NULL,
            http_status INTEGER,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            query_pattern TEXT NOT NULL,
            quality DOUBLE PRECISION,
            error TEXT
        )""",
        "CREATE INDEX serving_requests_domain_time ON serving_requests (domain_id, started_at)",
        """CREATE TABLE alerts (
            id {id},
            domain_id TEXT NOT NULL,
            model_version TEXT,
            kind TEXT NOT NULL,
            value DOUBLE PRECISION NOT NULL,
            threshold DOUBLE PRECISION NOT NULL,
            window_seconds DOUBLE PRECISION NOT NULL,
            requests INTEGER NOT NULL,
            action TEXT NOT NULL,
            created_at {ts} NOT NULL
        )""",
        "CREATE INDEX alerts_domain ON alerts (domain_id, id)",
    ]),
    (3, "promotions remember whether the version carries our pending tag", [
        "ALTER TABLE promotions ADD COLUMN noted_in_registry INTEGER NOT NULL DEFAULT 0",
    ]),
    (4, "manual review, semantic versions, registration times", [
        "ALTER TABLE promotions ADD COLUMN semver TEXT",
        "ALTER TABLE promotions ADD COLUMN registered_at {ts}",
        "ALTER TABLE promotions ADD COLUMN awaiting_since {ts}",
        "ALTER TABLE promotions ADD COLUMN approved_by TEXT",
        "ALTER TABLE promotions ADD COLUMN approved_at {ts}",
        "ALTER TABLE promotions ADD COLUMN approval_reason TEXT",
        "ALTER TABLE domain_configs ADD COLUMN semver TEXT",
        "ALTER TABLE domain_config_history ADD COLUMN semver TEXT",
        "CREATE INDEX promotions_created ON promotions (created_at)",
    ]),
    (5, "asynchronous serving telemetry: request ids, dropped records", [
        "ALTER TABLE serving_requests ADD COLUMN request_id TEXT",
        "CREATE INDEX serving_requests_request ON serving_requests (request_id)",
        """CREATE TABLE telemetry_drops (
            id {id},
            domain_id TEXT NOT NULL,
            dropped INTEGER NOT NULL,
            recorded_at {ts} NOT NULL
        )""",
        "CREATE INDEX telemetry_drops_domain_time ON telemetry_drops (domain_id, recorded_at)",
    ]),
    (6, "progressive delivery: canary and A/B rollouts, the arm that answered", [
        "ALTER TABLE domain_configs ADD COLUMN split TEXT",
        "ALTER TABLE serving_requests ADD COLUMN rollout_id INTEGER",
        "ALTER TABLE serving_requests ADD COLUMN arm TEXT",
        "CREATE INDEX serving_requests_rollout ON serving_requests (rollout_id, started_at)",
        "ALTER TABLE domain_config_history ADD COLUMN evidence TEXT",
        """CREATE TABLE rollouts (
            id {id},
            domain_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            promotion_id INTEGER NOT NULL,
            registry_version INTEGER NOT NULL,
            model_version TEXT NOT NULL,
            baseline_registry_version INTEGER NOT NULL,
            baseline_model_version TEXT NOT NULL,
            plan TEXT NOT NULL,
            step_index INTEGER NOT NULL,
            percent DOUBLE PRECISION NOT NULL,
            state TEXT NOT NULL,
            step_started_at {ts} NOT NULL,
            evidence TEXT,
            outcome TEXT,
            actor TEXT NOT NULL,
            created_at {ts} NOT NULL,
            updated_at {ts} NOT NULL
        )""",
        "CREATE INDEX rollouts_domain ON rollouts (domain_id, state)",
        """CREATE TABLE rollout_decisions (
            id {id},
            rollout_id INTEGER NOT NULL,
            step_index INTEGER NOT NULL,
            percent DOUBLE PRECISION NOT NULL,
            decision TEXT NOT NULL,
            evidence TEXT NOT NULL,
            actor TEXT NOT NULL,
            created_at {ts} NOT NULL,
            UNIQUE (rollout_id, step_index)
        )""",
    ]),
    (7, "poll cycles that read what changed: versions by domain, newest registration", [
        "CREATE INDEX promotions_version ON promotions (domain_id, registry_version)",
        "CREATE INDEX promotions_registered ON promotions (registered_at)",
    ]),
    (8, "pollers share their reads of the registry: when the newest recorded one began", [
        """CREATE TABLE registry_reads (
            reader TEXT PRIMARY KEY,
            read_at {ts} NOT NULL
        )""",
    ]),
]


def apply_migrations(database: Database) -> list[int]:
    """Bring the schema up to date; returns the numbers applied now. Safe to race."""
    dialect = database.dialect
    with database.lock("domain-mlflow:migrations"), database.transaction() as tx:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
            f"description TEXT NOT NULL, applied_at {dialect.timestamp} NOT NULL)"
        )
        done = {row["version"] for row in tx.execute("SELECT version FROM schema_migrations")}
        applied = []
        for number, description, statements in MIGRATIONS:
            if number in done:
                continue
            for statement in statements:
                tx.execute(statement.format(id=dialect.id_column, ts=dialect.timestamp))
            tx.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) "
                "VALUES (%s, %s, %s)",
                (number, description, utc_now()),
            )
            applied.append(number)
    return applied


def has_schema(database: Database) -> bool:
    """Whether migrations were ever applied here (``schema_migrations`` exists); creates
    nothing."""
    if database.dialect.name == "postgresql":
        # Resolved on the DSN's search_path, as every unqualified table name is.
        sql = "SELECT to_regclass('schema_migrations') IS NOT NULL AS found"
    else:
        sql = ("SELECT COUNT(*) > 0 AS found FROM sqlite_master WHERE type = 'table' "
               "AND name = 'schema_migrations'")
    with database.transaction() as tx:
        return bool(tx.execute(sql)[0]["found"])
