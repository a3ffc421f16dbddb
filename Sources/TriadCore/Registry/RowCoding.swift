import Foundation

/// How both SQL backends put labels and kinds in columns.
public enum RowCoding {
    public static func labelsText(_ labels: [String: String]) -> String {
        // The tree writer: the same text as JSONEncoder's, without Codable's cost on every write.
        labels.isEmpty ? "{}" : String(decoding: JSONCoding.encode(JSONValue.object(labels.mapValues(JSONValue.string))), as: UTF8.self)
    }

    /// Read on every row a backend returns, so it skips `Codable` (and the empty case entirely).
    public static func labels(_ text: String) -> [String: String] {
        if text == "{}" { return [:] }
        guard case .object(let members)? = try? JSONParser.parse(Data(text.utf8)) else { return [:] }
        return members.compactMapValues(\.stringValue)
    }

    public static func kind(_ text: String) throws -> ResourceKind {
        guard let kind = ResourceKind(rawValue: text) else { throw RegistryError.unavailable("stored row has unknown kind \(text)") }
        return kind
    }

    public static func eventKind(_ text: String) throws -> EventKind {
        guard let kind = EventKind(rawValue: text) else { throw RegistryError.unavailable("stored event has unknown kind \(text)") }
        return kind
    }

    public static func role(_ text: String) throws -> Role {
        guard let role = Role(rawValue: text) else { throw RegistryError.unavailable("stored token has unknown role \(text)") }
        return role
    }

    public static func eventType(_ text: String) throws -> RegistryEventType {
        guard let type = RegistryEventType(rawValue: text) else { throw RegistryError.unavailable("stored event has unknown type \(text)") }
        return type
    }
}
