import Foundation
import TandemPair
import TandemSimulation

// tandem-sim [--seeds N] [--from S] [--seed S] [--partition witness|takeover|split] [--engine] [--seats N]
//           [--verbose] [--trace]
// Runs the deterministic pair simulation; a failing seed replays exactly with --seed.
var from: UInt64 = 1
var count: UInt64 = 200
var verbose = false
var trace = false
var engine = false
var seats: UInt32?
var partition: PartitionMode?
var args = Array(CommandLine.arguments.dropFirst())
while !args.isEmpty {
    let a = args.removeFirst()
    switch a {
    case "--seeds": count = UInt64(args.removeFirst()) ?? count
    case "--from": from = UInt64(args.removeFirst()) ?? from
    case "--seed": from = UInt64(args.removeFirst()) ?? from; count = 1; verbose = true
    case "--verbose": verbose = true
    case "--trace": trace = true
    case "--engine": engine = true
    case "--seats": seats = UInt32(args.removeFirst())
    case "--partition":
        switch args.first {
        case "witness": partition = .witness
        case "takeover": partition = .takeover
        case "split": partition = .split(primaryPercent: 50)
        default:
            FileHandle.standardError.write(Data("tandem-sim: --partition takes witness, takeover or split\n".utf8));
            exit(2)
        }
        args.removeFirst()
    default:
        let usage =
            "usage: tandem-sim [--seeds N] [--from S] [--seed S] [--partition witness|takeover|split] "
            + "[--engine] [--seats N] [--verbose] [--trace]\n"
        FileHandle.standardError.write(Data(usage.utf8))
        exit(2)
    }
}
var failed = 0
var faults = 0, stops = 0, queued = 0, grantedAfterWaiting = 0
let start = Date()
for seed in from..<(from + count) {
    let r = runSeeds(seed..<(seed + 1)) {
        $0.trace = trace; $0.partition = partition; $0.engine = engine
        if let seats { $0.seats = seats }
    }.first!
    if !r.passed { failed += 1 }
    faults += r.faults
    stops += r.gracefulStops
    queued += r.queued
    grantedAfterWaiting += r.grantedAfterWaiting
    if verbose || !r.passed { print(r) }
}
print(
    "\(count - UInt64(failed)) passed, \(failed) failed (seeds \(from)..<\(from + count), \(faults) faults of which "
        + "\(stops) graceful stops, "
        + (engine ? "\(queued) waits for a seat, \(grantedAfterWaiting) granted after waiting, " : "")
        + "\(String(format: "%.1f", Date().timeIntervalSince(start))) s)"
)
exit(failed == 0 ? 0 : 1)
