/// Proleptic Gregorian dates in UTC, without Foundation (Howard Hinnant's algorithms).
public enum CivilDate {
    /// Days since 1970-01-01 for "YYYY-MM-DD" (years 1970-9999), nil if not a real date.
    public static func parse(_ s: String) -> Int64? {
        let parts = s.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
            let y = Int64(parts[0]), let m = Int64(parts[1]), let d = Int64(parts[2]), (1970...9999).contains(y)
        else { return nil }
        return days(year: y, month: m, day: d)
    }

    /// Days since 1970-01-01 (negative before it) for a real date of years 0-9999, else nil.
    public static func days(year y: Int64, month m: Int64, day d: Int64) -> Int64? {
        guard (0...9999).contains(y), (1...12).contains(m) else { return nil }
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
        let monthDays: [Int64] = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        guard d >= 1 && d <= monthDays[Int(m - 1)] else { return nil }
        let yy = m <= 2 ? y - 1 : y
        let era = yy / 400
        let yoe = yy - era * 400
        let mp = (m + 9) % 12
        let doy = (153 * mp + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// "YYYY-MM-DD" of the UTC day holding `usec` (µs since the epoch).
    public static func format(usec: USec) -> String {
        let z = Int64(usec / usecPerSecond / 86_400) + 719_468
        let era = z / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(y)-\(two(m))-\(two(d))"
    }

    /// "YYYY-MM-DDTHH:MM:SSZ" (RFC 3339, UTC, whole seconds) of `usec`.
    public static func formatInstant(usec: USec) -> String {
        let rem = Int64(usec / usecPerSecond) % 86_400
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(format(usec: usec))T\(two(rem / 3600)):\(two(rem / 60 % 60)):\(two(rem % 60))Z"
    }

    /// The instant `formatInstant` writes, read back (nil for anything else).
    public static func parseInstant(_ s: String) -> USec? {
        let u = Array(s.utf8)
        guard u.count == 20, u[10] == UInt8(ascii: "T"), u[13] == UInt8(ascii: ":"), u[16] == UInt8(ascii: ":"),
            u[19] == UInt8(ascii: "Z"), let day = parse(String(decoding: u[0..<10], as: UTF8.self))
        else { return nil }
        func num(_ r: Range<Int>, max: Int64) -> Int64? {
            guard u[r].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            let v = u[r].reduce(Int64(0)) { $0 * 10 + Int64($1 - 0x30) }
            return v <= max ? v : nil
        }
        guard let h = num(11..<13, max: 23), let m = num(14..<16, max: 59), let sec = num(17..<19, max: 59) else {
            return nil
        }
        return USec(day * 86_400 + h * 3600 + m * 60 + sec) * usecPerSecond
    }
}
