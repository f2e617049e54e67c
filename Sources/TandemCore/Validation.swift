/// Input rules shared by every adapter.
public enum Validate {
    /// Identifiers: license ids, features, lease/reservation ids.
    public static func identifier(_ value: String, _ what: String, max: Int = 128) throws(TandemError) {
        guard !value.isEmpty else { throw TandemError(.invalidArgs, "\(what) must not be empty") }
        guard value.utf8.count <= max else {
            throw TandemError(.invalidArgs, "\(what) is longer than \(max) bytes")
        }
        for b in value.utf8 {
            let ok =
                (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                || b == 0x2D || b == 0x5F || b == 0x2E || b == 0x3A
            guard ok else {
                throw TandemError(.invalidArgs, "\(what) may contain only letters, digits, '-', '_', '.', ':'")
            }
        }
    }

    /// Free text such as client ids and holders: printable, no control characters.
    public static func text(_ value: String, _ what: String, max: Int = 256) throws(TandemError) {
        guard !value.isEmpty else { throw TandemError(.invalidArgs, "\(what) must not be empty") }
        guard value.utf8.count <= max else {
            throw TandemError(.invalidArgs, "\(what) is longer than \(max) bytes")
        }
        for s in value.unicodeScalars where s.value < 0x20 || s.value == 0x7F {
            throw TandemError(.invalidArgs, "\(what) contains a control character")
        }
    }

    public static let maxCount: UInt32 = 1_000_000

    public static func count(_ value: UInt32, _ what: String = "count") throws(TandemError) {
        guard value >= 1 else { throw TandemError(.invalidArgs, "\(what) must be at least 1") }
        guard value <= maxCount else { throw TandemError(.invalidArgs, "\(what) must be at most \(maxCount)") }
    }

    /// A machine id as `/etc/machine-id` holds it (machine-id(5)): 32 lowercase hex digits.
    public static func machineId(_ value: String) throws(TandemError) {
        guard value.utf8.count == 32,
            value.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) })
        else {
            throw TandemError(.invalidArgs, "machine_id must be 32 lowercase hex digits, as /etc/machine-id holds")
        }
    }
}
