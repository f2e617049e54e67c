/// Untrusted text (ids, client names, anything a caller sent) as it may appear inside a
/// message or a log line.
///
/// A caller's text must never shape the line it lands in: a newline in a lease id written to
/// stderr becomes a journal line of its own, with a `<N>` priority of the caller's choosing.

/// `text` between single quotes, with quotes, backslashes and every control or invisible
/// formatting character escaped, cut after `limit` characters (marked with `...`).
public func quoted<S: StringProtocol>(_ text: S, limit: Int = 160) -> String {
    "'" + escapingControlCharacters(text, limit: limit, escapeQuote: true) + "'"
}

/// `text` with control, line-separator and format characters written as escapes (`\n`, `\t`,
/// `\u{202E}`), so that it stays on one line and shows what it holds; backslashes are doubled
/// unless `keepBackslashes` (for text already escaped in part, such as a log message that
/// quotes an id).
public func escapingControlCharacters<S: StringProtocol>(
    _ text: S, limit: Int = Int.max, escapeQuote: Bool = false,
    keepBackslashes: Bool = false
) -> String {
    // The common case, printable ASCII with nothing to escape, is returned as it is: every
    // log line goes through here.
    if text.utf8.count <= limit,
        text.utf8.allSatisfy({ b in
            b >= 0x20 && b < 0x7F && (b != 0x5C || keepBackslashes) && (b != 0x27 || !escapeQuote)
        })
    {
        return String(text)
    }
    var out = ""
    var count = 0
    for scalar in text.unicodeScalars {
        if count == limit {
            out += "..."
            break
        }
        count += 1
        switch scalar {
        case "\\" where !keepBackslashes: out += "\\\\"
        case "'" where escapeQuote: out += "\\'"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .unassigned:
                out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            default:
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out
}
