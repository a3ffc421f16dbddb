import Foundation

/// `httpAction.headers` often carry credentials for the upstream (API keys, bearer tokens):
/// only operators and admins see their values; everyone else, and every event that leaves the
/// server by AMQP, sees them redacted.
public enum HeaderRedaction {
    public static let placeholder = "<redacted>"

    /// The document with every operation's header values replaced; the same bytes when it has
    /// none (checked without parsing, so the common case costs a scan).
    public static func redacted(_ document: Data) -> Data {
        guard document.range(of: marker) != nil,
            case .object(var root)? = try? JSONCoding.parse(document),
            case .object(var spec)? = root["spec"], case .array(var operations)? = spec["operations"]
        else { return document }
        var changed = false
        for (i, operation) in operations.enumerated() {
            guard case .object(var op) = operation, case .object(var action)? = op["httpAction"],
                case .object(let headers)? = action["headers"], !headers.isEmpty
            else { continue }
            action["headers"] = .object(headers.mapValues { _ in .string(placeholder) })
            op["httpAction"] = .object(action)
            operations[i] = .object(op)
            changed = true
        }
        guard changed else { return document }
        spec["operations"] = .array(operations)
        root["spec"] = .object(spec)
        return JSONCoding.encode(JSONValue.object(root))
    }

    /// A registry event whose resource document is redacted (operation events carry none).
    public static func redacted(_ event: RegistryEvent) -> RegistryEvent {
        guard event.type.carriesResource else { return event }
        var copy = event
        copy.document = redacted(event.document)
        return copy
    }

    /// A non-empty header map: `"headers":{"` (canonical JSON has no spaces).
    private static let marker = Data(#""headers":{""#.utf8)
}
