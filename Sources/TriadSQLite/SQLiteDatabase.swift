import CSQLite
import Foundation
import NIOPosix
import Synchronization

/// A value bound to or read from an SQLite statement.
enum SQLiteValue: Sendable, Equatable {
    case integer(Int)
    case double(Double)
    case text(String)
    case null

    var string: String? {
        if case .text(let s) = self { return s }
        return nil
    }

    var integer: Int? {
        switch self {
        case .integer(let i): i
        case .double(let d): Int(d)
        default: nil
        }
    }

    var double: Double? {
        switch self {
        case .double(let d): d
        case .integer(let i): Double(i)
        default: nil
        }
    }
}

/// One result row; the column names are shared by every row of a result.
struct SQLiteRow: Sendable {
    let names: [String]
    let values: [SQLiteValue]

    func column(_ name: String) -> SQLiteValue? {
        names.firstIndex(of: name).map { values[$0] }
    }
}

struct SQLiteError: Error, CustomStringConvertible {
    var code: Int32
    var message: String
    var description: String { "SQLite error \(code): \(message)" }
}

/// One SQLite connection that keeps every statement it has prepared, so a query is parsed (and
/// its triggers compiled) once per connection rather than once per call. Not thread-safe: its
/// owner serialises use (`SQLiteConnectionBox`). Statements run on the calling thread; callers
/// move the long ones off the task pool (`SQLiteConnectionBox.offloaded`).
final class SQLiteDatabase {
    private var handle: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]

    init(path: String) throws {
        var db: OpaquePointer?
        // NOMUTEX: each connection is used by one thread at a time (its box's lock), so SQLite's
        // own per-connection mutex would only add cost.
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw SQLiteError(code: rc, message: "cannot open \(path): \(message)")
        }
        handle = db
    }

    deinit { close() }

    /// Finalises the kept statements and closes; a second call does nothing.
    func close() {
        for statement in statements.values { sqlite3_finalize(statement) }
        statements = [:]
        if let handle { sqlite3_close_v2(handle) }
        handle = nil
    }

    /// Runs `sql` (one or more statements, no parameters, nothing kept): pragmas, BEGIN, schema changes.
    func execute(_ sql: String) throws {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc) }
    }

    /// Runs one statement with `binds` and returns its rows.
    @discardableResult
    func query(_ sql: String, _ binds: [SQLiteValue] = []) throws -> [SQLiteRow] {
        let statement = try prepared(sql)
        defer {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
        }
        for (offset, value) in binds.enumerated() {
            try bind(value, at: Int32(offset + 1), in: statement)
        }
        let count = sqlite3_column_count(statement)
        let names = (0..<count).map { String(cString: sqlite3_column_name(statement, $0)) }
        var rows: [SQLiteRow] = []
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { return rows }
            guard rc == SQLITE_ROW else { throw error(rc) }
            rows.append(SQLiteRow(names: names, values: (0..<count).map { column($0, of: statement) }))
        }
    }

    private func prepared(_ sql: String) throws -> OpaquePointer {
        if let statement = statements[sql] { return statement }
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw error(rc) }
        statements[sql] = statement
        return statement
    }

    private func bind(_ value: SQLiteValue, at index: Int32, in statement: OpaquePointer) throws {
        let rc: Int32
        switch value {
        case .integer(let i): rc = sqlite3_bind_int64(statement, index, Int64(i))
        case .double(let d): rc = sqlite3_bind_double(statement, index, d)
        case .null: rc = sqlite3_bind_null(statement, index)
        case .text(let s):
            // SQLITE_TRANSIENT (a C macro Swift cannot import): SQLite copies the text, which
            // lives only as long as this call.
            let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
            rc = sqlite3_bind_text(statement, index, s, -1, transient)
        }
        guard rc == SQLITE_OK else { throw error(rc) }
    }

    private func column(_ index: Int32, of statement: OpaquePointer) -> SQLiteValue {
        switch sqlite3_column_type(statement, index) {
        case SQLITE_INTEGER: return .integer(Int(sqlite3_column_int64(statement, index)))
        case SQLITE_FLOAT: return .double(sqlite3_column_double(statement, index))
        case SQLITE_NULL: return .null
        default:
            guard let text = sqlite3_column_text(statement, index) else { return .null }
            let length = Int(sqlite3_column_bytes(statement, index))
            return .text(String(decoding: UnsafeBufferPointer(start: text, count: length), as: UTF8.self))
        }
    }

    private func error(_ rc: Int32) -> SQLiteError {
        SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(handle)))
    }
}

/// An `SQLiteDatabase` shared between tasks: one user at a time.
final class SQLiteConnectionBox: Sendable {
    private let database: Mutex<SQLiteDatabase?>

    init(_ database: sending SQLiteDatabase) {
        self.database = Mutex(database)
    }

    /// Runs `body` on the calling thread: for statements that touch a few rows by key.
    func sync<T: Sendable>(_ body: (SQLiteDatabase) throws -> T) throws -> T {
        try database.withLock { try body(Self.open($0)) }
    }

    /// `sync` if nobody else is using the connection right now, else nil.
    func syncIfFree<T: Sendable>(_ body: (SQLiteDatabase) throws -> T) throws -> T? {
        try database.withLockIfAvailable { try body(Self.open($0)) }
    }

    private static func open(_ db: SQLiteDatabase?) throws -> SQLiteDatabase {
        guard let db else { throw SQLiteError(code: SQLITE_MISUSE, message: "the registry is closed") }
        return db
    }

    /// Runs `body` on NIO's blocking thread pool: for scans, batches and checkpoints, which would
    /// hold a task-pool thread (two on this kind of machine) for too long.
    func offloaded<T: Sendable>(_ body: @escaping @Sendable (SQLiteDatabase) throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive { try self.sync(body) }
    }

    func close() {
        database.withLock { db in
            db?.close()
            db = nil
        }
    }
}
