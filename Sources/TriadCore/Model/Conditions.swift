extension [Condition] {
    public func condition(_ type: String) -> Condition? { first { $0.type == type } }

    /// A status merge patch's `conditions` that sets only the condition of `type`: conditions
    /// merge by type, so the others stay as the registry has them (perhaps newer than ours).
    public func patch(only type: String) throws -> JSONValue {
        .array(try filter { $0.type == type }.map { try JSONCoding.parse(JSONCoding.encode($0)) })
    }

    /// Sets the condition of `type`, keeping its transition time when the status did not change.
    public mutating func set(type: String, status: Condition.Status, reason: String, message: String?, at time: String) {
        if let i = firstIndex(where: { $0.type == type }) {
            let changed = self[i].status != status
            self[i].status = status
            self[i].reason = reason
            self[i].message = message
            if changed { self[i].lastTransitionTime = time }
        } else {
            append(Condition(type: type, status: status, reason: reason, message: message, lastTransitionTime: time))
        }
    }
}
