/// RFC 7386 JSON Merge Patch.
public enum MergePatch {
    public static func apply(_ patch: JSONValue, to target: JSONValue) -> JSONValue {
        guard case .object(let patchMembers) = patch else { return patch }
        var result: [String: JSONValue] = target.objectValue ?? [:]
        for (key, value) in patchMembers {
            if value == .null {
                result.removeValue(forKey: key)
            } else {
                result[key] = apply(value, to: result[key] ?? .null)
            }
        }
        return .object(result)
    }
}

/// A status merge patch: RFC 7386, except that `conditions` merge by `type` (as Kubernetes'
/// strategic merge does): a condition in the patch is merged into the one of the same type and
/// the others are kept, so an agent's heartbeat does not erase the probe's conditions.
public enum StatusMergePatch {
    /// `telemetry.values` is the latest sample, whole: a patch that carries it replaces the
    /// previous one instead of merging into it (merged, it would keep every key ever sent).
    public static func apply(_ patch: JSONValue, to status: JSONValue) -> JSONValue {
        let merged = applyMerging(patch, to: status)
        guard case .object(let values)? = patch["telemetry"]?["values"], case .object(var result) = merged,
            case .object(var telemetry)? = result["telemetry"]
        else { return merged }
        telemetry["values"] = .object(values.filter { $0.value != .null })
        result["telemetry"] = .object(telemetry)
        return .object(result)
    }

    private static func applyMerging(_ patch: JSONValue, to status: JSONValue) -> JSONValue {
        guard case .object(var members) = patch, case .array(let incoming)? = members["conditions"],
            case .array(var conditions)? = status["conditions"]
        else {
            return MergePatch.apply(patch, to: status)
        }
        members.removeValue(forKey: "conditions")
        for item in incoming {
            if let type = item["type"]?.stringValue, let i = conditions.firstIndex(where: { $0["type"]?.stringValue == type }) {
                conditions[i] = MergePatch.apply(item, to: conditions[i])
            } else {
                conditions.append(item)
            }
        }
        guard case .object(var result) = MergePatch.apply(.object(members), to: status) else { return status }
        result["conditions"] = .array(conditions)
        return .object(result)
    }
}
