/// The files an Envoy of the mesh watches (its listeners, clusters and route tables), each
/// with its name in the Envoy's config directory and the counter that grows once Envoy has
/// applied a new version of it: one place for the names the configuration, the pusher and the
/// tests share.
public enum EnvoyFile: Hashable, Sendable, CustomStringConvertible {
    case listeners
    case clusters
    case routes(RouteTable)

    /// The route tables: the gateway's, a sidecar's inbound one, and a sidecar's outbound one
    /// to each service it calls.
    public enum RouteTable: Hashable, Sendable {
        case gateway
        case inbound
        case outbound(service: String)

        /// The RDS `route_config_name`.
        public var configName: String {
            switch self {
            case .gateway: "gateway"
            case .inbound: "inbound"
            case .outbound(let service): "out-\(service)"
            }
        }

        /// The `stat_prefix` of the listener's connection manager that reads it.
        public var statPrefix: String {
            switch self {
            case .gateway: "gateway"
            case .inbound: "inbound"
            case .outbound(let service): "out_\(service)"
            }
        }
    }

    /// The file's name in the Envoy's config directory.
    public var name: String {
        switch self {
        case .listeners: "lds.json"
        case .clusters: "cds.json"
        case .routes(let table): "rds-\(table.configName).json"
        }
    }

    /// The Envoy counter that grows once a new version of the file has been applied.
    public var appliedCounter: String {
        switch self {
        case .listeners: "listener_manager.lds.update_success"
        case .clusters: "cluster_manager.cds.update_success"
        case .routes(let table): "http.\(table.statPrefix).rds.\(table.configName).update_success"
        }
    }

    public var description: String { name }
}
