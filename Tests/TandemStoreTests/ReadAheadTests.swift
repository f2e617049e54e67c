import Foundation
import Synchronization
import Testing
@testable import TandemStore

@Suite struct ReadAheadTests {
    struct Refused: Error {}

    /// A database with rows 1...n in table t.
    func numbers(_ n: Int) throws -> SQLiteDatabase {
        let db = try SQLiteDatabase(path: tempDir() + "/r.db")
        try db.exec("CREATE TABLE t (n INTEGER PRIMARY KEY)")
        try db.transaction { for i in 1...n { try db.run("INSERT INTO t VALUES (?)", .int(Int64(i))) } }
        return db
    }

    @Test func everyRowArrivesOnceInOrderAcrossBatches() throws {
        let db = try numbers(1000)
        var seen: [Int64] = [], sizes: [Int] = []
        try db.forEachBatch("SELECT n FROM t ORDER BY n", batchSize: 64, decode: { $0[0].int! }) {
            seen += $0
            sizes.append($0.count)
        }
        #expect(seen == Array(1...1000))
        // Full batches, then the rest: 15 × 64 + 40.
        #expect(sizes == Array(repeating: 64, count: 15) + [40])
        // The statement was reset: the connection answers again, and so does the same query.
        #expect(try db.query("SELECT COUNT(*) FROM t").first?.first?.int == 1000)
        var again = 0
        try db.forEachBatch("SELECT n FROM t ORDER BY n", decode: { $0[0].int! }) { again += $0.count }
        #expect(again == 1000)
    }

    @Test func theReadersErrorReachesTheCallerAfterTheRowsBeforeIt() throws {
        let db = try numbers(300)
        var seen = 0
        #expect(throws: Refused.self) {
            try db.forEachBatch(
                "SELECT n FROM t ORDER BY n", batchSize: 10,
                decode: { row in
                    if row[0].int! == 205 { throw Refused() }
                    return row[0].int!
                }
            ) { seen += $0.count }
        }
        #expect(seen == 200)
        #expect(try db.query("SELECT MAX(n) FROM t").first?.first?.int == 300)
    }

    @Test func theCallersErrorStopsTheReaderEarly() throws {
        let db = try numbers(5000)
        let decoded = Mutex(0)
        var batches = 0
        #expect(throws: Refused.self) {
            try db.forEachBatch(
                "SELECT n FROM t", batchSize: 10,
                decode: { row in
                    decoded.withLock { $0 += 1 }
                    return row[0].int!
                }
            ) { _ in
                batches += 1
                if batches == 2 { throw Refused() }
            }
        }
        #expect(batches == 2)
        // The reader stopped early (at most the queue's 4 batches and the one it was filling,
        // past the 2 taken), and reads no more rows once the call has returned.
        let atReturn = decoded.withLock { $0 }
        #expect(atReturn <= 80, "\(atReturn) rows read")
        usleep(100_000)
        #expect(decoded.withLock { $0 } == atReturn)
        // The reader is done with the connection: a write goes through at once.
        try db.run("INSERT INTO t VALUES (5001)")
        #expect(try db.query("SELECT COUNT(*) FROM t").first?.first?.int == 5001)
    }

    @Test func aBadQueryIsTheCallersError() throws {
        let db = try numbers(1)
        #expect(throws: SQLiteError.self) {
            try db.forEachBatch("SELECT nothing FROM nowhere", decode: { $0.count }) { _ in }
        }
    }
}
