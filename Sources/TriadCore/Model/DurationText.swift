import Foundation

/// Durations as people write them in flags and files: `500ms`, `10s`, `2m`, `1h`, or a bare
/// number of seconds.
public enum DurationText {
    /// The seconds `text` names, or nil when it is not a finite duration.
    public static func seconds(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        for (suffix, factor) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)] where t.hasSuffix(suffix) {
            return Double(t.dropLast(suffix.count)).flatMap { $0.isFinite ? $0 * factor : nil }
        }
        return Double(t).flatMap { $0.isFinite ? $0 : nil }
    }
}
