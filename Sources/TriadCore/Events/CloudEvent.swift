import Foundation

/// Renders registry events as CloudEvents 1.0 JSON (docs/events.md). The resource document is
/// spliced in as stored, so an event costs no decoding.
public enum CloudEventRenderer {
    public static func render(_ event: RegistryEvent) -> Data {
        var header: [String: String] = [
            "specversion": "1.0",
            "id": String(event.id),
            "source": event.kind == .project ? "/triad/projects/\(event.name)" : "/triad/resources/\(event.name)",
            "type": event.type.cloudEventType,
            "subject": event.name,
            "time": event.time,
            "datacontenttype": "application/json",
            "resourcekind": event.kind.routingName,
            "resourceversion": String(event.id),
        ]
        // An operation event's data is the ledger record; the resource did not change.
        if event.type.subject == .invocation { header["resourceversion"] = nil }
        var out = JSONCoding.encode(JSONValue.object(header.mapValues(JSONValue.string)))
        // Replace the closing brace with `,"data":<document>}`.
        out.removeLast()
        out.append(contentsOf: Array(#","data":"#.utf8))
        out.append(event.document)
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// The AMQP routing key `<kind>.<name>.<event>` (`project.<name>.<event>` for a project).
    public static func routingKey(_ event: RegistryEvent) -> String {
        "\(event.kind.routingName).\(event.name).\(event.type.routingName)"
    }
}
