import TandemBusClient
import TandemCore

/// What one method call or property write may carry, checked before the method or setter runs
/// (on the values as read; the bus's own message size limit bounds the reading): each string at most
/// `maxStringBytes` (the largest license document), each array at most `maxEntries` entries
/// (the options of `Acquire` are the only array argument, with two known keys), nesting at most
/// `maxDepth` (an option's variant holding containers is refused by its method anyway). A call
/// over a bound is `InvalidArgs` naming the argument, and the method never sees it.
enum ArgumentBounds {
    static let maxStringBytes = 64 * 1024
    static let maxEntries = 32
    static let maxDepth = 4

    static func check(_ args: [BusValue]) -> TandemError? {
        for (i, a) in args.enumerated() {
            if let why = problem(a, depth: 0) { return TandemError(.invalidArgs, "argument \(i + 1): \(why)") }
        }
        return nil
    }

    private static func problem(_ v: BusValue, depth: Int) -> String? {
        guard depth <= maxDepth else { return "nested deeper than \(maxDepth) containers" }
        switch v {
        case .string(let s), .objectPath(let s), .signature(let s):
            return s.utf8.count > maxStringBytes ? "a string of \(s.utf8.count) bytes (at most \(maxStringBytes))" : nil
        case .array(_, let items):
            guard items.count <= maxEntries else { return "an array of \(items.count) entries (at most \(maxEntries))" }
            return items.lazy.compactMap { problem($0, depth: depth + 1) }.first
        case .structure(let fields):
            return fields.lazy.compactMap { problem($0, depth: depth + 1) }.first
        case .dictEntry(let k, let value):
            return problem(k, depth: depth + 1) ?? problem(value, depth: depth + 1)
        case .variant(let inner):
            return problem(inner, depth: depth + 1)
        default:
            return nil
        }
    }
}
