import TandemBusClient
import TandemCore
import TandemEngine
import TandemStore

/// The usage history's methods: open to every caller, as `GetUsage` (who holds which license
/// is what `lmstat -a` shows any user of a FlexNet server; see docs/dbus-api.md).
extension LicenseManagerServer {
    func leaseHolderRows() -> [LeaseHolderRow] {
        engine.state.activeLeases(at: engine.now).map { l in
            LeaseHolderRow(
                id: l.id, feature: l.feature, client: l.client, count: l.count, acquiredUSec: l.acquiredUSec,
                expiresUSec: l.expiresUSec, user: l.user ?? "", host: l.host ?? "", token: l.token ?? "",
                uid: l.uid ?? AuditRow.noUid)
        }
    }

    func getUsageHistory(_ call: BusCall) -> BusAnswer {
        let (feature, since, until, step) = (call.string(0), call.uint64(1), call.uint64(2), call.uint64(3))
        return history { store in
            let buckets = try store.usageSeries(feature: feature, since: since, until: until, step: step)
            return UsageBucketRow.array(
                buckets.map {
                    UsageBucketRow(
                        startUSec: $0.startUSec, maxInUse: $0.maxInUse, seats: $0.seats,
                        acquisitions: $0.acquisitions, denials: $0.denials)
                })
        }
    }

    func listSessions(_ call: BusCall) -> BusAnswer {
        let (since, until) = (call.uint64(0), call.uint64(1))
        let filter: HistoryFilter
        do throws(TandemError) { filter = try Self.filter(call.args, at: 2) } catch { return .error(error) }
        return history { store in
            SessionRow.array(
                try store.sessions(since: since, until: until, filter: filter).map { s in
                    SessionRow(
                        leaseId: s.leaseId, feature: s.feature, client: s.client, count: s.count,
                        user: s.holder.user ?? "", host: s.holder.host ?? "", token: s.token ?? "",
                        uid: s.uid ?? AuditRow.noUid, startUSec: s.startUSec, endUSec: s.endUSec ?? 0,
                        ended: s.ended?.rawValue ?? "")
                })
        }
    }

    func listDenials(_ call: BusCall) -> BusAnswer {
        let (since, until) = (call.uint64(0), call.uint64(1))
        let filter: HistoryFilter
        do throws(TandemError) { filter = try Self.filter(call.args, at: 2) } catch { return .error(error) }
        return history { store in
            DenialRow.array(
                try store.denials(since: since, until: until, filter: filter).map { d in
                    DenialRow(
                        id: d.id, timeUSec: d.timeUSec, feature: d.feature, count: d.count, client: d.client,
                        user: d.holder.user ?? "", host: d.holder.host ?? "", token: d.token ?? "",
                        uid: d.uid ?? AuditRow.noUid, reason: d.reason.rawValue)
                })
        }
    }

    func getUsageReport(_ call: BusCall) -> BusAnswer {
        let (kind, since, until) = (call.string(0), call.uint64(1), call.uint64(2))
        guard kind == "sessions" || kind == "denials" else {
            return .error(TandemError(.invalidArgs, "kind must be \"sessions\" or \"denials\""))
        }
        guard let by = ReportGrouping(rawValue: call.string(3)) else {
            return .error(
                TandemError(
                    .invalidArgs, "by must be one of \(ReportGrouping.allCases.map(\.rawValue).joined(separator: ", "))"
                ))
        }
        let filter: HistoryFilter
        do throws(TandemError) { filter = try Self.filter(call.args, at: 4) } catch { return .error(error) }
        let now = engine.now
        return history { store in
            let rows =
                kind == "sessions"
                ? try store.sessionReport(since: since, until: until, by: by, filter: filter, now: now)
                : try store.denialReport(since: since, until: until, by: by, filter: filter)
            return UsageReportRow.array(
                rows.map {
                    UsageReportRow(
                        group: $0.group, count: $0.count, seatSeconds: UInt64(($0.seatHours * 3600).rounded()))
                })
        }
    }

    /// A read of the history once what was submitted before is durable; a bad range or filter
    /// is `InvalidArgs`, a database failure `Failed`.
    private func history(_ body: @escaping (Store) throws -> BusValue) -> BusAnswer {
        .later { [engine] done in
            engine.whenSettled {
                do {
                    done(.success([try body(engine.store)]))
                } catch let e as TandemError {
                    done(.failure(e))
                } catch {
                    done(.failure(TandemError(.failed, "cannot read the usage history: \(error)")))
                }
            }
        }
    }

    /// The `a{sv}` filter at `index`: `feature`, `user`, `host`, `client` (s), `limit` (u).
    static func filter(_ args: [BusValue], at index: Int) throws(TandemError) -> HistoryFilter {
        var f = HistoryFilter()
        var given: Set<String> = []
        for entry in args.count > index ? args[index].arrayValue ?? [] : [] {
            guard case .dictEntry(let k, .variant(let v)) = entry, let key = k.stringValue else { continue }
            guard given.insert(key).inserted else {
                throw TandemError(.invalidArgs, "filter key \(quoted(key)) is given twice")
            }
            switch (key, v) {
            case ("feature", .string(let s)): f.feature = s
            case ("user", .string(let s)): f.user = s
            case ("host", .string(let s)): f.host = s
            case ("client", .string(let s)): f.client = s
            case ("limit", .uint32(let n)): f.limit = Int(n)
            case ("feature", _), ("user", _), ("host", _), ("client", _), ("limit", _):
                throw TandemError(
                    .invalidArgs, "filter key \(quoted(key)) must be of type \(key == "limit" ? "u" : "s")")
            default:
                throw TandemError(.invalidArgs, "unknown filter key \(quoted(key))")
            }
        }
        return f
    }
}
