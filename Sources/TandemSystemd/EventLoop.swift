import CSystemd
import Foundation

/// An sd-event loop whose sources are objects: each holds its handler and releases its source
/// when it goes away. Runs on the thread that created it.
public final class EventLoop {
    public let event: OpaquePointer

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The thread's default loop.
    public init() throws(Failure) {
        var e: OpaquePointer?
        try Self.check(sd_event_default(&e), "sd_event_default")
        event = e!
    }

    deinit { sd_event_unref(event) }

    static func check(_ r: Int32, _ what: String) throws(Failure) {
        if r < 0 { throw Failure(description: "\(what): \(String(cString: strerror(-r)))") }
    }

    /// Sends WATCHDOG=1 at half the interval systemd asks for (nothing without WATCHDOG_USEC).
    public func enableWatchdog() throws(Failure) { try Self.check(sd_event_set_watchdog(event, 1), "watchdog") }

    /// Runs until `exit`; returns the code given to it.
    public func run() throws(Failure) -> Int32 {
        let r = sd_event_loop(event)
        try Self.check(r, "event loop")
        return r
    }

    public func exit(_ code: Int32) { sd_event_exit(event, code) }

    /// The loop's idea of now (the time its current iteration started).
    public func now(_ clock: ClockKind) -> UInt64 {
        var t: UInt64 = 0
        sd_event_now(event, clock.id, &t)
        return t
    }

    // MARK: - Sources

    /// Calls `handler` with the signal number when one of `signals` arrives (they are blocked for
    /// the process, so that only the loop receives them).
    public func onSignals(_ signals: [Int32], _ handler: @escaping (Int32) -> Void) throws(Failure) -> [EventSource] {
        try signals.map { (sig: Int32) throws(Failure) -> EventSource in
            let source = EventSource()
            source.onSignal = handler
            var s: OpaquePointer?
            try Self.check(
                sd_event_add_signal(event, &s, sig | SD_EVENT_SIGNAL_PROCMASK, signalCallback, source.userdata),
                "add signal \(sig)")
            source.attach(s!)
            return source
        }
    }

    /// Calls `handler` whenever `fd` is readable. Of the sources ready at once, the one with the
    /// lowest `priority` is handled first.
    public func onReadable(
        _ fd: Int32, priority: Int64 = 0, _ handler: @escaping () -> Void = {}
    ) throws(Failure) -> EventSource {
        let source = EventSource()
        source.onFire = handler
        var s: OpaquePointer?
        try Self.check(
            sd_event_add_io(event, &s, fd, UInt32(EPOLLIN.rawValue), ioCallback, source.userdata), "add io \(fd)")
        source.attach(s!)
        sd_event_source_set_priority(s, priority)
        return source
    }

    /// A timer on `clock`, off until scheduled (`schedule(at:)`), firing once per scheduling.
    public func timer(
        _ clock: ClockKind, accuracyUSec: UInt64 = 1000, _ handler: @escaping () -> Void = {}
    ) throws(Failure) -> EventSource {
        let source = EventSource()
        source.onFire = handler
        var s: OpaquePointer?
        try Self.check(
            sd_event_add_time(event, &s, clock.id, UInt64.max, accuracyUSec, timeCallback, source.userdata), "add timer"
        )
        source.attach(s!)
        source.enable(false)
        return source
    }

    /// Work run once per `trigger`, after the loop's pending events (a lower priority runs first).
    public func deferred(priority: Int64 = 0, _ handler: @escaping () -> Void = {}) throws(Failure) -> EventSource {
        let source = EventSource()
        source.onFire = handler
        var s: OpaquePointer?
        try Self.check(sd_event_add_defer(event, &s, deferCallback, source.userdata), "add defer")
        source.attach(s!)
        sd_event_source_set_priority(s, priority)
        source.enable(false)
        return source
    }
}

/// The clocks a timer can run on.
public enum ClockKind: Sendable {
    case realtime, monotonic
    var id: clockid_t { clockid_t(self == .realtime ? CLOCK_REALTIME : CLOCK_MONOTONIC) }
}

/// One source of an `EventLoop`, with its handler (which may be given after the source was
/// made, once its owner is complete). Released (and so disabled) with the object.
public final class EventSource {
    /// What the source does when it fires.
    public var onFire: () -> Void = {}
    /// For a signal source: what it does with the signal's number.
    public var onSignal: (Int32) -> Void = { _ in }
    private var source: OpaquePointer?

    init() {}

    func attach(_ s: OpaquePointer) { source = s }

    var userdata: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    deinit { sd_event_source_disable_unref(source) }

    /// Turns the source on (repeatedly, for I/O and signals) or off.
    public func enable(_ on: Bool) { sd_event_source_set_enabled(source, Int32(on ? SD_EVENT_ON : SD_EVENT_OFF)) }

    /// Runs a deferred source once, soon.
    public func trigger() { sd_event_source_set_enabled(source, Int32(SD_EVENT_ONESHOT)) }

    /// Fires a timer once at `usec` on its clock.
    public func schedule(at usec: UInt64) {
        sd_event_source_set_time(source, usec)
        sd_event_source_set_enabled(source, Int32(SD_EVENT_ONESHOT))
    }

    /// Whether the source is off (a timer not scheduled, a deferred source not triggered).
    public var isOff: Bool {
        var state: Int32 = 0
        sd_event_source_get_enabled(source, &state)
        return state == Int32(SD_EVENT_OFF)
    }

    fileprivate func fire() { onFire() }
    fileprivate func fire(signal: Int32) { onSignal(signal) }
}

private func source(_ userdata: UnsafeMutableRawPointer?) -> EventSource {
    Unmanaged<EventSource>.fromOpaque(userdata!).takeUnretainedValue()
}

private let signalCallback: sd_event_signal_handler_t = { _, info, userdata in
    source(userdata).fire(signal: Int32(info!.pointee.ssi_signo))
    return 0
}

private let ioCallback: sd_event_io_handler_t = { _, _, _, userdata in
    source(userdata).fire()
    return 0
}

private let timeCallback: sd_event_time_handler_t = { _, _, userdata in
    source(userdata).fire()
    return 0
}

private let deferCallback: sd_event_handler_t = { _, userdata in
    source(userdata).fire()
    return 0
}
