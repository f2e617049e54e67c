import Foundation

extension SQLiteDatabase {
    /// Runs a query on a reader thread that turns each row into a value with `decode`, and hands
    /// the values to `body` on the calling thread, a batch at a time, in row order. Stepping
    /// SQLite and building values (strings, mostly) is about a third of reading a million leases
    /// at start-up; on a second core it overlaps the caller's work with the rows already read.
    ///
    /// The reader is the connection's only user until this returns (the caller waits for it even
    /// when `body` or `decode` throws), which is what a connection opened without a mutex allows.
    /// The first error, the reader's or `body`'s, is thrown; the reader stops at the next batch.
    public func forEachBatch<T: Sendable>(
        _ sql: String, batchSize: Int = 4096, decode: @escaping @Sendable ([Value]) throws -> T,
        _ body: ([T]) throws -> Void
    ) throws {
        let queue = BatchQueue<T>(depth: 4)
        let connection = UncheckedConnection(db: self)
        let reader = Thread {
            do {
                var batch: [T] = []
                batch.reserveCapacity(batchSize)
                try connection.db.forEachRow(sql) { row in
                    batch.append(try decode(row))
                    guard batch.count == batchSize else { return }
                    guard queue.put(batch) else { throw BatchQueue<T>.Stopped() }
                    batch.removeAll(keepingCapacity: true)
                }
                if !batch.isEmpty { _ = queue.put(batch) }
                queue.finish(nil)
            } catch {
                queue.finish(error is BatchQueue<T>.Stopped ? nil : error)
            }
        }
        reader.name = "tandemd-read"
        reader.start()
        do {
            while let batch = try queue.take() { try body(batch) }
        } catch {
            queue.stop()
            throw error
        }
    }
}

/// The connection, handed to the reader thread while its owner waits (see `forEachBatch`).
private struct UncheckedConnection: @unchecked Sendable {
    let db: SQLiteDatabase
}

/// A bounded queue of batches from one reader thread to one consumer, which also carries the
/// reader's end (done, or its error) and the consumer's wish to stop early.
private final class BatchQueue<T>: @unchecked Sendable {
    struct Stopped: Error {}

    private let condition = NSCondition()
    private let depth: Int
    // All below are guarded by `condition`.
    private var batches: [[T]] = []
    private var ended = false
    private var failure: Error?
    private var stopped = false

    init(depth: Int) { self.depth = depth }

    /// The reader's side: waits while the queue is full; false once the consumer stopped.
    func put(_ batch: [T]) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while batches.count >= depth && !stopped { condition.wait() }
        guard !stopped else { return false }
        batches.append(batch)
        condition.broadcast()
        return true
    }

    /// The reader's last word.
    func finish(_ error: Error?) {
        condition.lock()
        defer { condition.unlock() }
        ended = true
        failure = error
        condition.broadcast()
    }

    /// The consumer's side: the next batch, nil after the last, or the reader's error.
    func take() throws -> [T]? {
        condition.lock()
        defer { condition.unlock() }
        while batches.isEmpty && !ended { condition.wait() }
        if !batches.isEmpty {
            condition.broadcast()
            return batches.removeFirst()
        }
        if let failure { throw failure }
        return nil
    }

    /// The consumer gives up: the reader stops at its next batch, and this waits until it has.
    func stop() {
        condition.lock()
        defer { condition.unlock() }
        stopped = true
        condition.broadcast()
        while !ended { condition.wait() }
    }
}
