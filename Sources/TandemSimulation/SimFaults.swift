import TandemCore
import TandemPair

/// The faults the scheduler injects during the fault phase.
extension Simulation {
    func injectFault() {
        result.faults += 1
        switch rng.below(7) {
        case 6:
            // A graceful stop (systemctl stop, now and then a package removal): the node tells its
            // peer and the witness as tandemd does before it exits, then is down.
            let i = Int(rng.below(2))
            if !down.contains(.node(i)) {
                stopGracefully(i, forGood: rng.chance(0.2))
                schedule(rng.range(1_000_000, 12_000_000), .restart(.node(i)))
            }
        case 0, 1:
            let i = Int(rng.below(2))
            if !down.contains(.node(i)) {
                crash(i)
                schedule(rng.range(1_000_000, 12_000_000), .restart(.node(i)))
            }
        case 2:
            if !down.contains(.witness) {
                down.insert(.witness)
                schedule(rng.range(1_000_000, 8_000_000), .restart(.witness))
            }
        case 3:
            // Cut both ways between the nodes.
            cut.insert([.node(0), .node(1)])
            cut.insert([.node(1), .node(0)])
            schedule(rng.range(2_000_000, 10_000_000), .heal(.node(0), .node(1)))
        case 4:
            // One-way cut, between the nodes or between a node and the witness.
            let a: Entity = .node(Int(rng.below(2)))
            let b: Entity = rng.chance(0.5) ? .witness : (a == .node(0) ? .node(1) : .node(0))
            if rng.chance(0.5) { cut.insert([a, b]) } else { cut.insert([b, a]) }
            schedule(rng.range(2_000_000, 10_000_000), .heal(a, b))
        default:
            // Isolate a node from everyone.
            let a: Entity = .node(Int(rng.below(2)))
            for b in [Entity.node(0), .node(1), .witness] where b != a {
                cut.insert([a, b])
                cut.insert([b, a])
            }
            schedule(rng.range(2_000_000, 10_000_000), .heal(a, .witness))
            schedule(rng.range(2_000_000, 10_000_000), .heal(a, a == .node(0) ? .node(1) : .node(0)))
        }
        if faultsOn {
            schedule(rng.range(cfg.meanFaultIntervalUSec / 2, cfg.meanFaultIntervalUSec * 3 / 2), .fault)
        }
    }
}

extension Simulation {
    /// tandemd stopping: the node leaves (it stops serving and says so), the engine commits and
    /// sends that, and the process is gone.
    func stopGracefully(_ i: Int, forGood: Bool) {
        result.gracefulStops += 1
        if let en = engines?[i] {
            guard let engine = en.engine else { return }
            engine.pairLeave(forGood: forGood)
            do { try engine.flush() } catch { engineFailure = "node \(i): commit failed: \(error)" }
            let out = en.effects
            en.effects = []
            apply(out, from: i)
        } else {
            apply(pure[i].leave(forGood: forGood, now: local(.node(i))), from: i)
        }
        crash(i)
    }
}
