import TriadCore

/// What a device can do, from its Home Assistant domain and the entity's own attributes
/// (`supported_features`, `preset_modes`, `supported_color_modes`), and whether a call's
/// arguments are ones Home Assistant would accept. Pure: no I/O.
public enum DeviceCapabilities {
    /// One operation: the Home Assistant service it calls and the arguments it takes.
    public struct Operation: Sendable, Equatable {
        public var name: String
        public var service: String
        public var description: String
    }

    /// A call Home Assistant would reject, or an operation the device does not have.
    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        public enum Kind: Sendable { case unknownOperation, invalidArguments }
        public var kind: Kind
        public var description: String
    }

    // Home Assistant's FanEntityFeature flags.
    static let fanSetSpeed = 1
    static let fanPresetMode = 8

    public static func operations(type: AgentConfig.DeviceType, attributes: [String: JSONValue]) -> [Operation] {
        let features = Int(attributes["supported_features"]?.numberValue ?? 0)
        switch type {
        case .fan:
            var ops = [
                Operation(name: "turn_on", service: "turn_on", description: "Turn on (optional percentage, preset_mode)"),
                Operation(name: "turn_off", service: "turn_off", description: "Turn off"),
            ]
            if features & fanSetSpeed != 0 {
                ops.append(Operation(name: "set_percentage", service: "set_percentage", description: "Set the speed: {\"percentage\": 0-100}"))
            }
            if features & fanPresetMode != 0 {
                ops.append(Operation(name: "set_preset_mode", service: "set_preset_mode", description: "Set the preset: {\"preset_mode\": …}"))
            }
            return ops
        case .switch:
            return [
                Operation(name: "turn_on", service: "turn_on", description: "Turn on"),
                Operation(name: "turn_off", service: "turn_off", description: "Turn off"),
                Operation(name: "toggle", service: "toggle", description: "Toggle"),
            ]
        case .light:
            return [
                Operation(name: "turn_on", service: "turn_on", description: "Turn on (optional brightness 0-255, rgb_color [r, g, b])"),
                Operation(name: "turn_off", service: "turn_off", description: "Turn off"),
            ]
        }
    }

    /// The service data for `operation` with `arguments`, checked against the entity's
    /// attributes before Home Assistant sees them.
    public static func serviceData(
        type: AgentConfig.DeviceType, operation name: String, arguments: [String: JSONValue],
        attributes: [String: JSONValue]
    ) throws(Refusal) -> (service: String, data: [String: JSONValue]) {
        guard let operation = operations(type: type, attributes: attributes).first(where: { $0.name == name }) else {
            let known = operations(type: type, attributes: attributes).map(\.name).joined(separator: ", ")
            throw Refusal(kind: .unknownOperation, description: "this \(type.rawValue) has no operation \(name); it has \(known)")
        }
        var allowed: Set<String> = []
        var data: [String: JSONValue] = [:]
        func percentage(required: Bool) throws(Refusal) {
            allowed.insert("percentage")
            guard let value = arguments["percentage"] else {
                if required { throw Refusal(kind: .invalidArguments, description: "percentage is required: an integer from 0 to 100") }
                return
            }
            guard let n = value.numberValue, n.rounded() == n, (0...100).contains(n) else {
                throw Refusal(kind: .invalidArguments, description: "percentage must be an integer from 0 to 100")
            }
            data["percentage"] = .number(n)
        }
        func presetMode(required: Bool) throws(Refusal) {
            allowed.insert("preset_mode")
            let modes = attributes["preset_modes"]?.arrayValue?.compactMap(\.stringValue) ?? []
            guard let value = arguments["preset_mode"] else {
                if required { throw Refusal(kind: .invalidArguments, description: "preset_mode is required: one of \(modes.joined(separator: ", "))") }
                return
            }
            guard let mode = value.stringValue, modes.contains(mode) else {
                throw Refusal(kind: .invalidArguments, description: "preset_mode must be one of \(modes.joined(separator: ", "))")
            }
            data["preset_mode"] = .string(mode)
        }
        let features = Int(attributes["supported_features"]?.numberValue ?? 0)
        switch (type, operation.name) {
        case (.fan, "turn_on"):
            if features & fanSetSpeed != 0 { try percentage(required: false) }
            if features & fanPresetMode != 0 { try presetMode(required: false) }
        case (.fan, "set_percentage"): try percentage(required: true)
        case (.fan, "set_preset_mode"): try presetMode(required: true)
        case (.light, "turn_on"):
            allowed.formUnion(["brightness", "rgb_color"])
            if let value = arguments["brightness"] {
                guard let n = value.numberValue, n.rounded() == n, (0...255).contains(n) else {
                    throw Refusal(kind: .invalidArguments, description: "brightness must be an integer from 0 to 255")
                }
                data["brightness"] = .number(n)
            }
            if let value = arguments["rgb_color"] {
                let modes = Set(attributes["supported_color_modes"]?.arrayValue?.compactMap(\.stringValue) ?? [])
                guard !modes.isDisjoint(with: ["rgb", "rgbw", "rgbww", "hs", "xy"]) else {
                    throw Refusal(
                        kind: .invalidArguments, description: "this light has no colour (its colour modes: \(modes.sorted().joined(separator: ", ")))")
                }
                guard let parts = value.arrayValue, parts.count == 3,
                    parts.allSatisfy({ $0.numberValue.map { $0.rounded() == $0 && (0...255).contains($0) } ?? false })
                else {
                    throw Refusal(kind: .invalidArguments, description: "rgb_color must be three integers from 0 to 255")
                }
                data["rgb_color"] = value
            }
        default: break
        }
        if let extra = arguments.keys.sorted().first(where: { !allowed.contains($0) }) {
            let takes = allowed.isEmpty ? "no arguments" : "only \(allowed.sorted().joined(separator: ", "))"
            throw Refusal(kind: .invalidArguments, description: "\(name) takes \(takes), not \(extra)")
        }
        return (operation.service, data)
    }

    /// What the resource's status shows of the entity: its state and attributes.
    public static func telemetry(_ state: EntityState) -> JSONValue {
        var values = state.attributes
        values["state"] = .string(state.state)
        return .object(values)
    }
}
