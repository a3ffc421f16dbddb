import Foundation
import Logging

/// Log lines on stderr: `time level label: message key=value …`. Metadata is formatted only when
/// a line is written (the stock stream handler formats on every metadata change, which the HTTP
/// server does once per request).
struct StderrLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let extra = event.metadata { all.merge(extra) { _, new in new } }
        var line = "\(Date().formatted(.iso8601)) \(event.level) \(label): \(event.message)"
        for key in all.keys.sorted() { line += " \(key)=\(all[key]!)" }
        line += "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
}
