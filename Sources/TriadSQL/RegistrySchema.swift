/// The registry's tables as versioned migrations, one list for both SQL backends (the SQL is
/// the same but for two type names, and SQLite's triggers). Backends apply the steps they have
/// not applied yet, in order.
public enum RegistrySchema {
    public enum Dialect: Sendable { case sqlite, postgres }

    public static func migrations(_ dialect: Dialect) -> [(version: Int, statements: [String])] {
        let int64 = dialect == .sqlite ? "INTEGER" : "BIGINT"
        // Names compare byte-wise in both, so `continue` tokens page the same way.
        let bytewise = dialect == .postgres ? " COLLATE \"C\"" : ""
        return [
            (
                1,
                [
                    "CREATE TABLE triad_counters (name TEXT PRIMARY KEY, value \(int64) NOT NULL)",
                    "INSERT INTO triad_counters (name, value) VALUES ('revision', 0)",
                    """
                    CREATE TABLE triad_resources (name TEXT\(bytewise) PRIMARY KEY, kind TEXT NOT NULL, labels TEXT NOT NULL,
                      revision \(int64) NOT NULL, document TEXT NOT NULL)
                    """,
                    "CREATE INDEX triad_resources_kind ON triad_resources (kind, name)",
                    """
                    CREATE TABLE triad_events (id \(int64) PRIMARY KEY, type TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
                      labels TEXT NOT NULL, time TEXT NOT NULL, document TEXT NOT NULL)
                    """,
                    """
                    CREATE TABLE triad_tokens (name TEXT PRIMARY KEY, role TEXT NOT NULL, resource TEXT,
                      secret_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, revoked_at TEXT)
                    """,
                ]
            )
        ] + (dialect == .sqlite ? sqliteWriteTriggers : []) + [
            (3, ["CREATE TABLE triad_relay_cursors (name TEXT PRIMARY KEY, last_id \(int64) NOT NULL)"]),
            // Telemetry history (docs/mqtt.md): outside the registry's write path, written in batches.
            (
                4,
                [
                    """
                    CREATE TABLE triad_telemetry (seq \(dialect == .sqlite ? "INTEGER PRIMARY KEY" : "BIGSERIAL PRIMARY KEY"),
                      resource TEXT\(bytewise) NOT NULL, time TEXT\(bytewise) NOT NULL, received_at TEXT\(bytewise) NOT NULL,
                      sample_values TEXT NOT NULL)
                    """,
                    "CREATE INDEX triad_telemetry_resource_time ON triad_telemetry (resource, time)",
                    "CREATE INDEX triad_telemetry_received ON triad_telemetry (received_at)",
                ]
            ),
        ] + (dialect == .postgres ? postgresChangeNotifications : []) + [
            // The ledger: one row per invocation, written with its `invoked`/`completed` event.
            // `seq` (the revision of the `invoked` event) orders it; `document` is the record.
            (
                6,
                [
                    """
                    CREATE TABLE triad_invocations (id TEXT PRIMARY KEY, seq \(int64) NOT NULL UNIQUE, resource TEXT\(bytewise) NOT NULL,
                      caller TEXT\(bytewise) NOT NULL, state TEXT NOT NULL, node TEXT NOT NULL, started_at TEXT\(bytewise) NOT NULL,
                      charged \(dialect == .sqlite ? "REAL" : "DOUBLE PRECISION") NOT NULL, document TEXT NOT NULL)
                    """,
                    "CREATE INDEX triad_invocations_resource ON triad_invocations (resource, seq)",
                    "CREATE INDEX triad_invocations_caller ON triad_invocations (caller, seq)",
                    "CREATE INDEX triad_invocations_unfinished ON triad_invocations (node, state)",
                ]
            )
        ] + (dialect == .sqlite ? sqliteOperationEventTriggers : []) + [
            // Projects (docs/projects.md): written from their events, as resources are.
            (8, ["CREATE TABLE triad_projects (name TEXT\(bytewise) PRIMARY KEY, revision \(int64) NOT NULL, document TEXT NOT NULL)"])
        ] + (dialect == .sqlite ? sqliteProjectEventTriggers : [])
    }

    /// SQLite: a project event writes (or deletes) the project and moves the revision counter,
    /// so a project write is one INSERT too.
    static let sqliteProjectEventTriggers: [(version: Int, statements: [String])] = [
        (
            9,
            [
                """
                CREATE TRIGGER triad_events_projects AFTER INSERT ON triad_events
                  WHEN NEW.type IN ('project.created', 'project.updated', 'project.status')
                BEGIN
                  INSERT INTO triad_projects (name, revision, document) VALUES (NEW.name, NEW.id, NEW.document)
                    ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, document = excluded.document;
                  UPDATE triad_counters SET value = NEW.id WHERE name = 'revision';
                END
                """,
                """
                CREATE TRIGGER triad_events_projects_delete AFTER INSERT ON triad_events WHEN NEW.type = 'project.deleted'
                BEGIN
                  DELETE FROM triad_projects WHERE name = NEW.name;
                  UPDATE triad_counters SET value = NEW.id WHERE name = 'revision';
                END
                """,
            ]
        )
    ]

    /// SQLite: operation events (`invoked`, `completed`) take a revision like every event but
    /// change no resource, so the apply trigger skips them; their own trigger writes the ledger's
    /// row from the event's document (the invocation record), so recording an invocation is one
    /// INSERT, atomic on its own, like every other registry write here.
    static let sqliteOperationEventTriggers: [(version: Int, statements: [String])] = [
        (
            7,
            [
                "DROP TRIGGER triad_events_apply",
                """
                CREATE TRIGGER triad_events_apply AFTER INSERT ON triad_events
                  WHEN NEW.type IN ('created', 'updated', 'status', 'acquired', 'released')
                BEGIN
                  \(applyResourceEvent)
                END
                """,
                """
                CREATE TRIGGER triad_events_ledger AFTER INSERT ON triad_events WHEN NEW.type IN ('invoked', 'completed')
                BEGIN
                  INSERT INTO triad_invocations (id, seq, resource, caller, state, node, started_at, charged, document)
                    VALUES (json_extract(NEW.document, '$.id'), NEW.id, json_extract(NEW.document, '$.resource'),
                      json_extract(NEW.document, '$.caller'), json_extract(NEW.document, '$.state'),
                      json_extract(NEW.document, '$.node'), json_extract(NEW.document, '$.startedAt'),
                      json_extract(NEW.document, '$.charged'), NEW.document)
                    ON CONFLICT (id) DO UPDATE SET state = excluded.state, charged = excluded.charged, document = excluded.document;
                  UPDATE triad_counters SET value = NEW.id WHERE name = 'revision';
                END
                """,
            ]
        )
    ]

    /// PostgreSQL: every statement that appends events notifies channel `triad_events` with the
    /// schema's name (one database may hold several registries), so other replicas' streams,
    /// relays and controllers wake at once instead of at their next poll.
    static let postgresChangeNotifications: [(version: Int, statements: [String])] = [
        (
            5,
            [
                """
                CREATE FUNCTION triad_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM pg_notify('triad_events', current_schema()); RETURN NULL; END $$
                """,
                """
                CREATE TRIGGER triad_events_notify AFTER INSERT ON triad_events
                FOR EACH STATEMENT EXECUTE FUNCTION triad_notify_events()
                """,
            ]
        )
    ]

    /// SQLite: what a resource event does to the resource table and the revision counter.
    static let applyResourceEvent = """
        INSERT INTO triad_resources (name, kind, labels, revision, document)
          VALUES (NEW.name, NEW.kind, NEW.labels, NEW.id, NEW.document)
          ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, labels = excluded.labels,
            revision = excluded.revision, document = excluded.document;
        UPDATE triad_counters SET value = NEW.id WHERE name = 'revision';
        """

    /// SQLite: appending an event applies it to the resource table and the revision counter, so
    /// a registry write is one INSERT, atomic on its own (each statement costs thread hops in the
    /// embedded store; a transaction would cost four statements more).
    static let sqliteWriteTriggers: [(version: Int, statements: [String])] = [
        (
            2,
            [
                """
                CREATE TRIGGER triad_events_apply AFTER INSERT ON triad_events WHEN NEW.type != 'deleted'
                BEGIN
                  \(applyResourceEvent)
                END
                """,
                """
                CREATE TRIGGER triad_events_apply_delete AFTER INSERT ON triad_events WHEN NEW.type = 'deleted'
                BEGIN
                  DELETE FROM triad_resources WHERE name = NEW.name;
                  UPDATE triad_counters SET value = NEW.id WHERE name = 'revision';
                END
                """,
            ]
        )
    ]
}
