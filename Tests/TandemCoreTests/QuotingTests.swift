import Testing
import TandemCore

@Suite struct Quoting {
    @Test func untrustedTextStaysOnOneLineAndShowsWhatItHolds() {
        #expect(quoted("lease-1") == "'lease-1'")
        #expect(quoted("a\nb") == #"'a\nb'"#)
        #expect(quoted("it's") == #"'it\'s'"#)
        #expect(quoted(#"c:\x"#) == #"'c:\\x'"#)
        #expect(quoted("\u{1B}[31m\u{202E}\t") == #"'\u{1B}[31m\u{202E}\t'"#)
        #expect(quoted(String(repeating: "x", count: 200), limit: 4) == "'xxxx...'")
        #expect(quoted("ünïcödé 許可") == "'ünïcödé 許可'")
        #expect(escapingControlCharacters(#"no lease 'x\n'"# + "\n", keepBackslashes: true) == #"no lease 'x\n'\n"#)
    }
}
