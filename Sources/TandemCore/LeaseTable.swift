/// The live leases of a `LicenseState`, by id.
///
/// Each lease is kept in an immutable box, so that a dictionary bucket holds a reference, not the
/// ~190 bytes of a `Lease`. States are copied (the engine's and the store's history's share the
/// loaded leases, and part the moment either changes): copying a table copies references, and a
/// half-empty bucket array (Swift's dictionaries grow at 3/4 full) costs 8 bytes a bucket, not
/// the size of a lease. With a million leases that is the difference between ~450 MB per copy
/// and ~50 MB (tandem-bench --scale).
public struct LeaseTable: Sendable, Equatable {
    final class Box: Sendable {
        let lease: Lease
        init(_ lease: Lease) { self.lease = lease }
    }

    private var boxes: [String: Box] = [:]

    public init() {}

    public subscript(id: String) -> Lease? { boxes[id]?.lease }

    public var count: Int { boxes.count }
    public var isEmpty: Bool { boxes.isEmpty }
    public var keys: some Collection<String> { boxes.keys }
    public var values: some Collection<Lease> { boxes.values.lazy.map(\.lease) }

    mutating func reserveCapacity(_ n: Int) { boxes.reserveCapacity(n) }

    /// Puts `lease` in (replacing the one with its id); returns the one it replaced.
    @discardableResult
    mutating func insert(_ lease: Lease) -> Lease? {
        boxes.updateValue(Box(lease), forKey: lease.id)?.lease
    }

    mutating func remove(_ id: String) -> Lease? { boxes.removeValue(forKey: id)?.lease }

    /// Changes the lease `id`, if there is one (a new box: others may hold the old one).
    @discardableResult
    mutating func update(_ id: String, _ body: (inout Lease) -> Void) -> Bool {
        guard var lease = boxes[id]?.lease else { return false }
        body(&lease)
        boxes[id] = Box(lease)
        return true
    }

    public static func == (a: LeaseTable, b: LeaseTable) -> Bool {
        guard a.boxes.count == b.boxes.count else { return false }
        for (id, box) in a.boxes {
            guard let other = b.boxes[id] else { return false }
            if other !== box && other.lease != box.lease { return false }
        }
        return true
    }
}
