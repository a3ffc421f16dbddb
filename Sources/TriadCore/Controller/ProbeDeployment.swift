/// The `kubernetes` probe runtime (docs/mqtt.md): a resource's probe as a Deployment, with the same
/// environment the local runtime gives a probe. The device token is not in the document: it is
/// read from a Secret (`triad-probe-<name>`, key `token`) that the operator creates with
/// `triad token create --role device --resource <name>`.
public enum ProbeDeployment {
    public enum RenderError: Error, Equatable, CustomStringConvertible {
        case noProbe(String)
        public var description: String {
            switch self {
            case .noProbe(let name): "resource \(name) has no spec.probeImage: there is no probe to render"
            }
        }
    }

    public static func render(_ resource: Resource, mqttURL: String, apiURL: String, namespace: String? = nil) throws(RenderError) -> JSONValue {
        guard let image = resource.spec.probeImage, !image.isEmpty else { throw .noProbe(resource.name) }
        let name = "triad-probe-\(resource.name)"
        let labels: JSONValue = .object(["app.kubernetes.io/name": .string("triad-probe"), "triad.io/resource": .string(resource.name)])
        var metadata: [String: JSONValue] = ["name": .string(name), "labels": labels]
        if let namespace { metadata["namespace"] = .string(namespace) }
        let env: [JSONValue] = [
            .object(["name": .string("TRIAD_RESOURCE"), "value": .string(resource.name)]),
            .object(["name": .string("TRIAD_MQTT_URL"), "value": .string(mqttURL)]),
            .object(["name": .string("TRIAD_API_URL"), "value": .string(apiURL)]),
            .object([
                "name": .string("TRIAD_TOKEN"),
                "valueFrom": .object([
                    "secretKeyRef": .object(["name": .string(name), "key": .string("token")])
                ]),
            ]),
        ]
        let container: JSONValue = .object([
            "name": .string("probe"),
            "image": .string(image),
            "args": .array((resource.spec.probeArgs ?? []).map(JSONValue.string)),
            "env": .array(env),
        ])
        // probeEnabled: false keeps the Deployment but runs nothing, as the local runtime stops it.
        let replicas: Double = resource.spec.probeEnabled == false ? 0 : 1
        return .object([
            "apiVersion": .string("apps/v1"),
            "kind": .string("Deployment"),
            "metadata": .object(metadata),
            "spec": .object([
                "replicas": .number(replicas),
                "selector": .object(["matchLabels": labels]),
                "template": .object([
                    "metadata": .object([
                        "labels": labels,
                        "annotations": .object([
                            "triad.io/generation": .string(String(resource.metadata.generation ?? 1))
                        ]),
                    ]),
                    "spec": .object(["containers": .array([container])]),
                ]),
            ]),
        ])
    }
}
