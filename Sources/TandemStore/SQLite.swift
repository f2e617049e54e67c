import CTandemSQLite

public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public let message: String
    public var description: String { "SQLite error \(code): \(message)" }
}

/// A minimal wrapper over one sqlite3 connection. Not thread-safe: one owner uses it.
public final class SQLiteDatabase {
    let handle: OpaquePointer
    public let path: String
    private var statements: [String: OpaquePointer] = [:]

    public init(path: String) throws {
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let db else {
            let msg = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            if let db { sqlite3_close_v2(db) }
            throw SQLiteError(code: rc, message: "\(path): \(msg)")
        }
        handle = db
        self.path = path
        sqlite3_busy_timeout(db, 1000)
    }

    private var isClosed = false

    deinit { close() }

    /// Closes the database (after checkpointing its WAL, as the last connection does). Nothing
    /// may use it afterwards. A process that exits without releasing it calls this first.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        for s in statements.values { sqlite3_finalize(s) }
        statements = [:]
        sqlite3_close_v2(handle)
    }

    func error(_ rc: Int32) -> SQLiteError {
        SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(handle)))
    }

    public func exec(_ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            let msg = err.map { String(cString: $0) } ?? "unknown"
            sqlite3_free(err)
            throw SQLiteError(code: rc, message: msg)
        }
    }

    public enum Value: Sendable, Equatable {
        case int(Int64)
        case text(String)
        /// Bytes (the change log's payloads).
        case blob([UInt8])
        case null
    }

    private func prepared(_ sql: String) throws -> OpaquePointer {
        if let s = statements[sql] {
            sqlite3_reset(s)
            sqlite3_clear_bindings(s)
            return s
        }
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc) }
        statements[sql] = stmt
        return stmt
    }

    private func bind(_ stmt: OpaquePointer, _ args: [Value]) throws {
        for (i, v) in args.enumerated() {
            let idx = Int32(i + 1)
            let rc: Int32
            switch v {
            case .int(let n): rc = sqlite3_bind_int64(stmt, idx, n)
            case .text(let s): rc = sqlite3_bind_text(stmt, idx, s, -1, tandem_sqlite_transient())
            case .blob(let b):
                rc = b.withUnsafeBytes {
                    sqlite3_bind_blob(stmt, idx, $0.baseAddress, Int32($0.count), tandem_sqlite_transient())
                }
            case .null: rc = sqlite3_bind_null(stmt, idx)
            }
            guard rc == SQLITE_OK else { throw error(rc) }
        }
    }

    /// Runs a statement that returns no rows.
    public func run(_ sql: String, _ args: Value...) throws { try run(sql, arguments: args) }

    public func run(_ sql: String, arguments args: [Value]) throws {
        let stmt = try prepared(sql)
        try bind(stmt, args)
        let rc = sqlite3_step(stmt)
        sqlite3_reset(stmt)
        guard rc == SQLITE_DONE || rc == SQLITE_ROW else { throw error(rc) }
    }

    /// Runs a query and returns all rows.
    public func query(_ sql: String, _ args: Value...) throws -> [[Value]] { try query(sql, arguments: args) }

    public func query(_ sql: String, arguments args: [Value]) throws -> [[Value]] {
        var rows: [[Value]] = []
        try forEachRow(sql, arguments: args) { rows.append($0) }
        return rows
    }

    /// Runs a query and hands each row to `body` as it is read: a table of a million rows is
    /// never held whole (tandemd's start-up reads its leases so).
    public func forEachRow(_ sql: String, arguments args: [Value] = [], _ body: ([Value]) throws -> Void) throws {
        let stmt = try prepared(sql)
        try bind(stmt, args)
        defer { sqlite3_reset(stmt) }
        let columns = sqlite3_column_count(stmt)
        var row: [Value] = []
        row.reserveCapacity(Int(columns))
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw error(rc) }
            row.removeAll(keepingCapacity: true)
            for c in 0..<columns {
                switch sqlite3_column_type(stmt, c) {
                case SQLITE_NULL: row.append(.null)
                case SQLITE_INTEGER: row.append(.int(sqlite3_column_int64(stmt, c)))
                case SQLITE_BLOB:
                    let n = Int(sqlite3_column_bytes(stmt, c))
                    let p = sqlite3_column_blob(stmt, c)
                    row.append(.blob(p.map { Array(UnsafeRawBufferPointer(start: $0, count: n)) } ?? []))
                default:
                    if let p = sqlite3_column_text(stmt, c) {
                        row.append(.text(String(cString: p)))
                    } else {
                        row.append(.null)
                    }
                }
            }
            try body(row)
        }
    }

    /// Rows the last INSERT, UPDATE or DELETE changed.
    public var changes: Int { Int(sqlite3_changes(handle)) }

    /// Runs `body` in one transaction (BEGIN IMMEDIATE ... COMMIT), rolling back on error.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        // Prepared once and kept, as every statement run through `run`.
        try run("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try run("COMMIT")
            return result
        } catch {
            try? exec("ROLLBACK")
            throw error
        }
    }

    public func pragma(_ name: String) throws -> String {
        guard let v = try query("PRAGMA \(name)").first?.first else { return "" }
        switch v {
        case .int(let n): return String(n)
        case .text(let s): return s
        case .blob(let b): return String(decoding: b, as: UTF8.self)
        case .null: return ""
        }
    }
}

extension SQLiteDatabase.Value {
    public var int: Int64? { if case .int(let n) = self { return n } else { return nil } }
    public var text: String? {
        switch self {
        case .text(let s): return s
        case .int(let n): return String(n)
        case .blob, .null: return nil
        }
    }
}
