import Foundation
import Testing
import TriadCore

/// The hand-written RFC 3339 formatter and parser against Foundation's own.
@Suite("Timestamps")
struct TimestampTests {
    static let foundationStyle = Date.ISO8601FormatStyle.iso8601.year().month().day().dateSeparator(.dash)
        .time(includingFractionalSeconds: true).timeSeparator(.colon).timeZone(separator: .omitted)

    @Test func formattingMatchesFoundationAndRoundTrips() {
        var generator = SystemRandomNumberGenerator()
        let samples =
            [0.0, 1.5, -1.25, 951_782_400.999, 1_764_115_200, 4_102_444_799.5]
            + (0..<2000).map { _ in Double(Int64.random(in: -2_000_000_000_000...4_000_000_000_000, using: &generator)) / 1000 }
        for t in samples {
            let date = Date(timeIntervalSince1970: t)
            let ours = Timestamp.format(date)
            let theirs = date.formatted(Self.foundationStyle)
            // Foundation sometimes truncates a millisecond below the double's value (.999 → .998).
            let ms = { (s: String) in Int(s.dropFirst(20).prefix(3)) ?? -10 }
            #expect(ours.prefix(20) == theirs.prefix(20) && abs(ms(ours) - ms(theirs)) <= 1 && ours.hasSuffix("Z"), "\(ours) vs \(theirs)")
            let back = Timestamp.parse(ours)
            #expect(back.map { abs($0.timeIntervalSince1970 - t) < 0.0015 } == true, "\(ours)")  // Date keeps times as doubles since 2001: ±1 ms
        }
    }

    @Test func parsingAcceptsRFC3339AndRefusesTheRest() {
        let valid: [(String, Double)] = [
            ("2026-11-25T10:00:00Z", 1_795_600_800), ("2026-11-25t10:00:00z", 1_795_600_800),
            ("2026-11-25T10:00:00.5Z", 1_795_600_800.5), ("2026-11-25T12:30:00+02:30", 1_795_600_800),
            ("2026-11-25T07:00:00-03:00", 1_795_600_800), ("2024-02-29T00:00:00Z", 1_709_164_800),
            ("2016-12-31T23:59:60Z", 1_483_228_799), ("1969-12-31T23:59:59.250Z", -0.75),
        ]
        for (text, expected) in valid {
            #expect(Timestamp.parse(text).map { abs($0.timeIntervalSince1970 - expected) < 1e-6 } == true, "\(text)")
        }
        for text in [
            "", "2026-11-25", "2026-11-25 10:00:00Z", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2025-02-29T00:00:00Z",
            "2026-11-25T24:00:00Z", "2026-11-25T10:60:00Z", "2026-11-25T10:00:61Z", "2026-11-25T10:00:00", "2026-11-25T10:00:00.Z",
            "2026-11-25T10:00:00+0200", "2026-11-25T10:00:00+24:00", "2026-11-25T10:00:00Zjunk", "２０２６-11-25T10:00:00Z",
            "yesterday",
        ] {
            #expect(Timestamp.parse(text) == nil, "\(text)")
        }
    }
}

@Suite("Timestamps at the edges")
struct TimestampEdgeTests {
    /// An offset that carries a time out of years 0000–9999 is refused (formatting it trapped).
    @Test func offsetsOutsideTheFourDigitYearsAreRefused() {
        #expect(Timestamp.parse("0000-01-01T00:00:00+23:59") == nil)
        #expect(Timestamp.parse("9999-12-31T23:59:59-23:59") == nil)
        let earliest = try! #require(Timestamp.parse("0000-01-01T00:00:00Z"))
        #expect(Timestamp.format(earliest) == "0000-01-01T00:00:00.000Z")
        let latest = try! #require(Timestamp.parse("9999-12-31T23:59:59Z"))
        #expect(Timestamp.format(latest).hasPrefix("9999-12-31T23:59:59"))
    }
}
