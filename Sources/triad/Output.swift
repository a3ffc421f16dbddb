import Foundation
import TriadCore

/// How client verbs print resources for people.
enum Output {
    static func render(_ items: [JSONValue], as format: OutputFormat, single: Bool) -> String {
        switch format {
        case .json:
            let value = single ? items[0] : .object(["apiVersion": .string(Resource.apiVersion), "kind": .string("ResourceList"), "items": .array(items)])
            return prettyJSON(value) + "\n"
        case .yaml:
            return items.map { DocumentWriter.yaml($0) }.joined(separator: "---\n")
        case .table, .wide:
            if items.isEmpty { return "No resources found.\n" }
            var header = ["NAME", "KIND", "PHASE", "PROBE", "BOUND", "AGE"]
            if format == .wide { header += ["ACCESS", "OPERATIONS", "LABELS"] }
            var rows = [header]
            for r in items {
                var row = [
                    r["metadata"]?["name"]?.stringValue ?? "",
                    r["spec"]?["kind"]?.stringValue ?? "",
                    r["status"]?["phase"]?.stringValue ?? "",
                    r["status"]?["probePhase"]?.stringValue ?? "",
                    r["status"]?["bound"] == .bool(true) ? "true" : "false",
                    age(r["metadata"]?["creationTimestamp"]?.stringValue),
                ]
                if format == .wide {
                    let ops = (r["spec"]?["operations"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
                    let labels = (r["metadata"]?["labels"]?.objectValue ?? [:]).sorted { $0.key < $1.key }
                        .map { "\($0.key)=\($0.value.stringValue ?? "")" }
                    row += [
                        r["spec"]?["accessMode"]?.stringValue ?? "Shared", ops.isEmpty ? "<none>" : ops.joined(separator: ","),
                        labels.isEmpty ? "<none>" : labels.joined(separator: ","),
                    ]
                }
                rows.append(row)
            }
            return table(rows)
        }
    }

    static func table(_ rows: [[String]]) -> String {
        guard let first = rows.first else { return "" }
        var widths = first.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        return rows.map { row in
            row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i] + 3, withPad: " ", startingAt: 0) }
                .joined()
        }.joined(separator: "\n") + "\n"
    }

    static func age(_ timestamp: String?) -> String {
        guard let timestamp, let date = Timestamp.parse(timestamp) else { return "" }
        let seconds = Int(Date().timeIntervalSince(date))
        switch seconds {
        case ..<120: return "\(max(0, seconds))s"
        case ..<7200: return "\(seconds / 60)m"
        case ..<172_800: return "\(seconds / 3600)h"
        default: return "\(seconds / 86400)d"
        }
    }

    static func prettyJSON(_ value: JSONValue) -> String {
        let encoder = JSONCoding.encoder()
        encoder.outputFormatting.insert(.prettyPrinted)
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }

    static func describe(_ r: JSONValue) -> String {
        var out = ""
        func line(_ key: String, _ value: String?) { out += "\(key + ":")".padding(toLength: 20, withPad: " ", startingAt: 0) + (value ?? "<none>") + "\n" }
        func map(_ v: JSONValue?) -> String? {
            guard let o = v?.objectValue, !o.isEmpty else { return nil }
            return o.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.stringValue ?? Output.compact($0.value))" }.joined(separator: ", ")
        }
        line("Name", r["metadata"]?["name"]?.stringValue)
        line("Kind", r["spec"]?["kind"]?.stringValue)
        line("Alias", r["spec"]?["aliasName"]?.stringValue)
        line("Labels", map(r["metadata"]?["labels"]))
        line("Annotations", map(r["metadata"]?["annotations"]))
        line("Description", map(r["spec"]?["description"]))
        line("Access mode", r["spec"]?["accessMode"]?.stringValue ?? "Shared")
        line("Created", r["metadata"]?["creationTimestamp"]?.stringValue)
        line("Resource version", r["metadata"]?["resourceVersion"]?.stringValue)
        line("Generation", r["metadata"]?["generation"].map(compact))
        let ops = r["spec"]?["operations"]?.arrayValue ?? []
        out += "Operations:" + (ops.isEmpty ? "          <none>\n" : "\n")
        for op in ops {
            let price = op["price"].map(compact) ?? "0"
            out +=
                "  \(op["name"]?.stringValue ?? "")\t\(op["httpAction"]?["action"]?.stringValue ?? "") \(op["httpAction"]?["url"]?.stringValue ?? "")\tprice \(price)\n"
        }
        let probe = [r["spec"]?["probeImage"]?.stringValue].compactMap { $0 } + (r["spec"]?["probeArgs"]?.arrayValue ?? []).compactMap(\.stringValue)
        line("Probe", probe.isEmpty ? nil : probe.joined(separator: " ") + (r["spec"]?["probeEnabled"] == .bool(true) ? " (enabled)" : " (disabled)"))
        out += "Status:\n"
        let s = r["status"]
        line("  Phase", s?["phase"]?.stringValue)
        line("  Probe phase", s?["probePhase"]?.stringValue)
        line("  Bound", s?["bound"].map(compact))
        if let b = s?["binding"], let holder = b["holder"]?.stringValue {
            line("  Binding", "\(holder) since \(b["acquiredAt"]?.stringValue ?? "?") until \(b["expiresAt"]?.stringValue ?? "?")")
        }
        line("  Observed gen.", s?["observedGeneration"].map(compact))
        line("  Location", map(s?["location"]))
        line("  Telemetry", s?["telemetry"].map(compact))
        let conditions = s?["conditions"]?.arrayValue ?? []
        out += "Conditions:" + (conditions.isEmpty ? "          <none>\n" : "\n")
        if !conditions.isEmpty {
            var rows = [["  TYPE", "STATUS", "REASON", "MESSAGE"]]
            for c in conditions {
                rows.append([
                    "  " + (c["type"]?.stringValue ?? ""), c["status"]?.stringValue ?? "", c["reason"]?.stringValue ?? "", c["message"]?.stringValue ?? "",
                ])
            }
            out += table(rows)
        }
        return out
    }

    static func compact(_ v: JSONValue) -> String {
        String(decoding: JSONCoding.encode(v), as: UTF8.self)
    }
}
