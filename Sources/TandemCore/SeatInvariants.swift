/// The seat accounting's invariants, checked by the property tests of the core and by the pair
/// simulation after every step.
extension LicenseState {
    /// What is wrong with the seat accounting at `now` (empty when nothing is).
    ///
    /// Always: every view adds up (`inUse + reserved + available == max(seats, inUse)`, the
    /// license shares sum to the feature's numbers and fit their licenses' seats unless use
    /// exceeds all of them) and the Manager totals are the features' sums. For a state that
    /// only `decide` has changed, with no license run out: use never exceeds the seats,
    /// reservations never promise more than the seats, and use plus idle reservations fit
    /// in them. `overcommitted: true` leaves those three out, for states that may hold more
    /// than their seats without a wrong decision: a license ran out, or a pair healed after
    /// a partition under `PartitionPolicy=takeover`, where both sides granted.
    public func seatAccountingFaults(at now: USec, overcommitted: Bool = false) -> [String] {
        var faults: [String] = []
        var seatsSum: UInt64 = 0, inUseSum: UInt64 = 0
        for f in features {
            let u = usage(f, at: now)
            seatsSum += UInt64(u.seats)
            inUseSum += UInt64(u.inUse)
            let viewSum = UInt64(u.inUse) + UInt64(u.reserved) + UInt64(u.available)
            if viewSum != UInt64(max(u.seats, u.inUse)) {
                faults.append(
                    "\(f): in use \(u.inUse) + reserved \(u.reserved) + available \(u.available) != seats \(u.seats)")
            }
            let setAside = setAside(f), idle = idleReserved(f, exceptHolder: nil)
            if !overcommitted {
                if setAside > u.seats { faults.append("\(f): \(setAside) seats reserved of \(u.seats)") }
                if u.inUse > u.seats { faults.append("\(f): \(u.inUse) seats in use of \(u.seats)") }
                if UInt64(u.inUse) + idle > UInt64(u.seats) {
                    faults.append("\(f): \(u.inUse) in use and \(idle) reserved unused exceed \(u.seats) seats")
                }
                if UInt64(u.reserved) != idle {
                    faults.append("\(f): reserved \(u.reserved), idle reservations \(idle)")
                }
            }
            let shares = shares(f, at: now)
            let sharedUse = shares.reduce(UInt64(0)) { $0 + UInt64($1.inUse) }
            let sharedReserve = shares.reduce(UInt64(0)) { $0 + UInt64($1.reserved) }
            if !shares.isEmpty, sharedUse != UInt64(u.inUse) || sharedReserve != UInt64(u.reserved) {
                faults.append(
                    "\(f): license shares add up to \(sharedUse) in use, \(sharedReserve) reserved,"
                        + " not \(u.inUse), \(u.reserved)"
                )
            }
            if u.inUse <= u.seats {
                for s in shares where UInt64(s.inUse) + UInt64(s.reserved) > UInt64(s.seats) {
                    faults.append(
                        "\(f): license \(s.licenseId) attributed \(s.inUse) + \(s.reserved) of \(s.seats) seats")
                }
            }
        }
        if UInt64(totalSeats(at: now)) != seatsSum || UInt64(totalInUse) != inUseSum {
            faults.append(
                "totals \(totalInUse)/\(totalSeats(at: now)) differ from the features' \(inUseSum)/\(seatsSum)")
        }
        return faults
    }
}
