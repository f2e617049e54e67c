import Foundation

/// Runs CPU-bound work on a thread of its own and waits for it without holding a thread of
/// Swift's cooperative pool.
///
/// The pool has one thread per core. A test that computes for half a minute on it (simulation
/// seeds, property sequences) leaves the async tests beside it no thread: on two cores the whole
/// test run stalled for 38 s, and a pair test's own timing (a kill, a failover wait) with it.
/// Record issues from the result, in the test's own context, not inside `work`.
public func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: work()) }
        thread.stackSize = 16 << 20
        thread.start()
    }
}
