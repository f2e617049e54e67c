/// The live leases of a `LicenseState`, by id.
///
/// What a lease was granted with is kept in an immutable box, so that a dictionary bucket holds
/// a reference and the expiry (which every renewal changes), 16 bytes, not the ~190 of a `Lease`.
/// Swift's dictionaries grow at 3/4 full, so a table of a million leases has 2^21 buckets: 32
/// bytes each with the id, ~67 MB instead of ~440 MB. That matters because states are copied:
/// the engine's and the store's history's share the leases loaded at start-up and part the
/// moment either changes, and a copied table copies references. A renewal changes the bucket,
/// not the box, so the boxes (~220 bytes each) stay shared by the copies; a lease granted after
/// start-up is boxed once too, when the second state to apply it is given the first one's table
/// (`insert(_:sharingWith:)`). A borrow's revocation, which is rare, boxes the lease again.
public struct LeaseTable: Sendable, Equatable {
    final class Box: Sendable {
        /// The lease as granted or revoked (its expiry is the entry's).
        let lease: Lease
        init(_ lease: Lease) { self.lease = lease }
    }

    struct Entry: Sendable {
        let box: Box
        var expiresUSec: USec

        init(_ lease: Lease, in box: Box? = nil) { (self.box, expiresUSec) = (box ?? Box(lease), lease.expiresUSec) }

        var lease: Lease {
            var l = box.lease
            l.expiresUSec = expiresUSec
            return l
        }
    }

    /// A lease's client and request id, for finding it by request (idempotent acquisition). The
    /// box stands for both: a bucket is one reference, where a key of its own would be two
    /// strings or a joined one (~100 bytes a lease, twice over: the state is copied).
    struct RequestKey: Hashable, Sendable {
        let box: Box

        static func == (a: RequestKey, b: RequestKey) -> Bool {
            let (x, y) = (a.box.lease, b.box.lease)
            return a.box === b.box || (x.client == y.client && x.requestId == y.requestId)
        }

        func hash(into h: inout Hasher) {
            h.combine(box.lease.client)
            h.combine(box.lease.requestId)
        }
    }

    private var entries: [String: Entry] = [:]
    /// The leases taken with a request id, by client and request id (the last one put in, when
    /// two leases share them: a pair merged after a split). A box here may be an older one of
    /// its lease (see `revokeBorrow`): only its id, client and request id are read.
    private var byRequest: Set<RequestKey> = []

    public init() {}

    public subscript(id: String) -> Lease? { entries[id]?.lease }

    /// Whether there is a lease `id` (without copying it out).
    public func contains(_ id: String) -> Bool { entries.index(forKey: id) != nil }

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }
    public var keys: some Collection<String> { entries.keys }
    public var values: some Collection<Lease> { entries.values.lazy.map(\.lease) }

    /// How many leases the request index holds (for tests: a release must not leave one behind).
    var requestIndexCount: Int { byRequest.count }

    mutating func reserveCapacity(_ n: Int) {
        entries.reserveCapacity(n)
        byRequest.reserveCapacity(n)
    }

    /// The lease `client` took with `requestId`, if it is still here.
    func lease(forRequest requestId: String, client: String) -> Lease? {
        let probe = Box(
            Lease(
                id: "", feature: "", client: client, count: 0, uid: nil, requestId: requestId, acquiredUSec: 0,
                expiresUSec: 0, ttlUSec: 0, epoch: 0))
        guard let i = byRequest.firstIndex(of: RequestKey(box: probe)) else { return nil }
        return self[byRequest[i].box.lease.id]
    }

    /// Puts `lease` in (replacing the one with its id); returns the one it replaced. The box of
    /// `other`'s lease of that id is shared if it holds this very lease (as granted).
    @discardableResult
    mutating func insert(_ lease: Lease, sharingWith other: LeaseTable? = nil) -> Lease? {
        let shared = other?.entries[lease.id].flatMap { $0.box.lease == lease ? $0.box : nil }
        let entry = Entry(lease, in: shared)
        if lease.requestId != nil { byRequest.update(with: RequestKey(box: entry.box)) }
        return entries.updateValue(entry, forKey: lease.id)?.lease
    }

    mutating func remove(_ id: String) -> Lease? {
        guard let gone = entries.removeValue(forKey: id) else { return nil }
        if gone.box.lease.requestId != nil { byRequest.remove(RequestKey(box: gone.box)) }
        return gone.lease
    }

    /// Sets the expiry of lease `id`, if there is one.
    @discardableResult
    mutating func renew(_ id: String, expiresUSec: USec) -> Bool {
        guard let i = entries.index(forKey: id) else { return false }
        entries.values[i].expiresUSec = expiresUSec
        return true
    }

    /// Records when the borrow `id` was revoked, if there is one (in a new box: others may hold
    /// the old one).
    mutating func revokeBorrow(_ id: String, at: USec) {
        guard let i = entries.index(forKey: id) else { return }
        var lease = entries.values[i].lease
        lease.borrowRevokedUSec = at
        entries.values[i] = Entry(lease)
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
            // A box keeps the expiry it was granted with: different boxes may hold the same lease.
            guard other.expiresUSec == entry.expiresUSec, other.box === entry.box || other.lease == entry.lease
            else { return false }
        }
        return true
    }
}
