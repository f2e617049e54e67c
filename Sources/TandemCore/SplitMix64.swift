/// A small deterministic random generator (SplitMix64): the same seed replays exactly. The
/// simulation draws its faults from it and the property tests and fuzzers their inputs.
public struct SplitMix64: Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    public init(state: UInt64) { self.state = state }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func below(_ n: UInt64) -> UInt64 { n == 0 ? 0 : next() % n }
    public mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }
    public mutating func range(_ lo: UInt64, _ hi: UInt64) -> UInt64 { lo + below(hi - lo + 1) }
    /// An index from 0 to `n - 1`.
    public mutating func index(below n: Int) -> Int { Int(below(UInt64(n))) }
    public mutating func pick<T>(_ items: [T]) -> T { items[index(below: items.count)] }
}
