import CSystemd
import Foundation
import TandemSystemd

/// Hands closures from any thread to the event-loop thread: a locked queue plus an eventfd
/// that the loop watches. This is how the network API's threads reach the single owner of
/// the state.
final class LoopMailbox: @unchecked Sendable {
    let fd: Int32
    private let lock = NSLock()
    private var items: [() -> Void] = []

    init() throws {
        fd = eventfd(0, Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK))
        guard fd >= 0 else { throw ServiceError("eventfd: \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    /// Queues `body` to run on the loop thread; callable from any thread.
    func post(_ body: @escaping () -> Void) {
        lock.withLock { items.append(body) }
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    /// Runs everything queued so far (on the loop thread).
    func drain() {
        var counter: UInt64 = 0
        _ = read(fd, &counter, 8)
        let batch = lock.withLock {
            let b = items
            items = []
            return b
        }
        for f in batch { f() }
    }
}
