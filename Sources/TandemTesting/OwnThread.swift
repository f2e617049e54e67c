import Foundation

/// Runs CPU-bound work on a thread of its own and waits for it without holding a thread of
/// Swift's cooperative pool.
///
/// The pool has one thread per core. A test that computes for half a minute on it (simulation
/// seeds, property sequences) leaves the async tests beside it no thread: on two cores the whole
/// test run stalled for 38 s, and a pair test's own timing (a kill, a failover wait) with it.
/// Record issues from the result, in the test's own context, not inside `work`.
///
/// The thread runs at the lowest priority (nice 19): the real processes of the integration
/// tests beside it (tandemd pairs under load, failovers on a timer) get the cores first.
public func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread {
            // On Linux the nice value is per thread, and "this process" (0) is the calling thread.
            setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
            continuation.resume(returning: work())
        }
        thread.stackSize = 16 << 20
        thread.start()
    }
}
