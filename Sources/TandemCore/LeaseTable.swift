/// The live leases of a `LicenseState`, by id.
///
/// What a lease was granted with is kept in an immutable box, so that a dictionary bucket holds
/// a reference and the two times that change (the expiry, a borrow's revocation), 32 bytes, not
/// the ~190 of a `Lease`. Swift's dictionaries grow at 3/4 full, so a table of a million leases
/// has 2^21 buckets: 48 bytes each with the id, ~100 MB instead of ~440 MB. That matters because
/// states are copied: the engine's and the store's history's share the leases loaded at start-up
/// and part the moment either changes, and a copied table copies references. A renewal changes
/// the bucket, not the box, so the boxes (~220 bytes each) stay shared by the copies; a lease
/// granted after start-up is boxed once too, when the second state to apply it is given the
/// first one's table (`insert(_:sharingWith:)`).
public struct LeaseTable: Sendable, Equatable {
    final class Box: Sendable {
        let lease: Lease
        init(_ lease: Lease) { self.lease = lease }
    }

    struct Entry: Sendable {
        let box: Box
        var expiresUSec: USec
        var borrowRevokedUSec: USec?

        init(_ lease: Lease, in box: Box? = nil) {
            (self.box, expiresUSec, borrowRevokedUSec) = (box ?? Box(lease), lease.expiresUSec, lease.borrowRevokedUSec)
        }

        var lease: Lease {
            var l = box.lease
            (l.expiresUSec, l.borrowRevokedUSec) = (expiresUSec, borrowRevokedUSec)
            return l
        }
    }

    private var entries: [String: Entry] = [:]

    public init() {}

    public subscript(id: String) -> Lease? { entries[id]?.lease }

    /// Whether there is a lease `id` (without copying it out).
    public func contains(_ id: String) -> Bool { entries.index(forKey: id) != nil }

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }
    public var keys: some Collection<String> { entries.keys }
    public var values: some Collection<Lease> { entries.values.lazy.map(\.lease) }

    mutating func reserveCapacity(_ n: Int) { entries.reserveCapacity(n) }

    /// Puts `lease` in (replacing the one with its id); returns the one it replaced. The box of
    /// `other`'s lease of that id is shared if it holds this very lease (as granted).
    @discardableResult
    mutating func insert(_ lease: Lease, sharingWith other: LeaseTable? = nil) -> Lease? {
        let shared = other?.entries[lease.id].flatMap { $0.box.lease == lease ? $0.box : nil }
        return entries.updateValue(Entry(lease, in: shared), forKey: lease.id)?.lease
    }

    mutating func remove(_ id: String) -> Lease? { entries.removeValue(forKey: id)?.lease }

    /// Sets the expiry of lease `id`, if there is one.
    @discardableResult
    mutating func renew(_ id: String, expiresUSec: USec) -> Bool {
        guard let i = entries.index(forKey: id) else { return false }
        entries.values[i].expiresUSec = expiresUSec
        return true
    }

    /// Records when the borrow `id` was revoked, if there is one.
    mutating func revokeBorrow(_ id: String, at: USec) {
        guard let i = entries.index(forKey: id) else { return }
        entries.values[i].borrowRevokedUSec = at
    }

    /// Whether lease `id` is in the same box here and in `other` (see `insert(_:sharingWith:)`).
    func sharesBox(_ id: String, with other: LeaseTable) -> Bool {
        guard let mine = entries[id], let theirs = other.entries[id] else { return false }
        return mine.box === theirs.box
    }

    public static func == (a: LeaseTable, b: LeaseTable) -> Bool {
        guard a.entries.count == b.entries.count else { return false }
        for (id, entry) in a.entries {
            guard let other = b.entries[id] else { return false }
            guard other.expiresUSec == entry.expiresUSec, other.borrowRevokedUSec == entry.borrowRevokedUSec,
                other.box === entry.box || other.lease == entry.lease  // a box keeps the times it was granted with
            else { return false }
        }
        return true
    }
}
