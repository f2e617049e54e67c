/// The live leases of a `LicenseState`, by id.
///
/// Each lease is kept in an immutable box, so that a dictionary bucket holds a reference, not the
/// ~190 bytes of a `Lease`. Swift's dictionaries grow at 3/4 full, so a table of a million leases
/// has 2^21 buckets: 24 bytes each (the id and a reference) instead of 208, ~50 MB instead of
/// ~440 MB. That matters because states are copied: the engine's and the store's history's
/// share the leases loaded at start-up and part the moment either changes, and a copied table
/// copies references. The boxes (~220 bytes each) are shared by the copies until a lease
/// changes; a lease granted or renewed afterwards is boxed by each state that applies it.
public struct LeaseTable: Sendable, Equatable {
    final class Box: Sendable {
        let lease: Lease
        init(_ lease: Lease) { self.lease = lease }
    }

    private var boxes: [String: Box] = [:]

    public init() {}

    public subscript(id: String) -> Lease? { boxes[id]?.lease }

    /// Whether there is a lease `id` (without copying it out).
    public func contains(_ id: String) -> Bool { boxes.index(forKey: id) != nil }

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
        guard let i = boxes.index(forKey: id) else { return false }
        var lease = boxes.values[i].lease
        body(&lease)
        boxes.values[i] = Box(lease)
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
