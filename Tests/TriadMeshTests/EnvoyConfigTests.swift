import Foundation
import Testing
import TriadCore
import TriadMesh

/// The rendered Envoy configuration (pure; the end-to-end tests run it on the real Envoy).
@Suite("Envoy configuration")
struct EnvoyConfigTests {
    static func plan(_ propagation: MeshConfig.PinPropagation) throws -> MeshPlan {
        let yaml = MeshConfigTests.good.replacingOccurrences(of: "spec:\n", with: "spec:\n  pinPropagation: \(propagation.rawValue)\n")
        let config = try MeshConfigParser.parse(Data(yaml.utf8), baseDirectory: "/srv")
        var next = 20000
        return try MeshPlan.make(config, runDirectory: "/run/m", socketDirectory: "/tmp/s") {
            next += 1
            return next
        }
    }

    /// Envoy's safe_regex header match must match the whole value.
    static func fullMatch(_ regex: String, _ value: String) -> Bool {
        let re = try! NSRegularExpression(pattern: "^(?:\(regex))$")
        return re.firstMatch(in: value, range: NSRange(value.startIndex..., in: value)) != nil
    }

    @Test func routesArePinsThenUnknownPinsThenTheDefault() throws {
        let table = EnvoyConfig.targetRoutes("out-auth", ServiceRoutes(service: "auth", versions: ["v1", "v1.1"], defaultVersion: "v1"))
        let routes = try #require(table["virtual_hosts"]?.arrayValue?.first?["routes"]?.arrayValue)
        #expect(routes.map { $0["name"]?.stringValue } == ["pin:auth-v1", "pin:auth-v1.1", EnvoyConfig.unknownPinRoute, "default:auth-v1"])
        let v1 = try #require(routes[0]["match"]?["headers"]?.arrayValue?.first?["string_match"]?["safe_regex"]?["regex"]?.stringValue)
        #expect(Self.fullMatch(v1, "auth-v1"))
        #expect(Self.fullMatch(v1, "db-v3, auth-v1"))
        #expect(Self.fullMatch(v1, "auth-v10,auth-v1"))
        #expect(!Self.fullMatch(v1, "auth-v10"), "auth-v10 is not auth-v1")
        #expect(!Self.fullMatch(v1, "auth-v1x"))
        #expect(!Self.fullMatch(v1, "myauth-v1"))
        let v11 = try #require(routes[1]["match"]?["headers"]?.arrayValue?.first?["string_match"]?["safe_regex"]?["regex"]?.stringValue)
        #expect(Self.fullMatch(v11, "auth-v1.1") && !Self.fullMatch(v11, "auth-v1x1"))
        let unknown = try #require(routes[2]["match"]?["headers"]?.arrayValue?.first?["string_match"]?["safe_regex"]?["regex"]?.stringValue)
        #expect(Self.fullMatch(unknown, "auth-v9") && !Self.fullMatch(unknown, "auth-x-v1") && !Self.fullMatch(unknown, "db-v1"))
        #expect(routes[2]["direct_response"]?["status"] == .number(503))
        #expect(routes[3]["route"]?["cluster"] == "auth-v1")
    }

    @Test func sidecarsRecordAtAdmissionAndCallOtherServicesThroughTheirOwnListeners() throws {
        let plan = try Self.plan(.mesh)
        let auth = try #require(plan.instances.first { $0.id == "auth-v1-1" }, "replicas get their own sidecars")
        #expect(Set(auth.sidecar.outboundPorts.keys) == ["portal"])
        #expect(
            plan.environment(of: auth) == ["PORT": String(auth.app.port), "TRIAD_UPSTREAM_PORTAL": "http://127.0.0.1:\(auth.sidecar.outboundPorts["portal"]!)"])
        let files = EnvoyConfig.sidecar(auth, plan: plan)
        #expect(Set(files.dynamic.keys.map(\.name)) == ["lds.json", "cds.json", "rds-inbound.json", "rds-out-portal.json"])
        let listeners = try #require(files.dynamic[.listeners]?["resources"]?.arrayValue)
        let inbound = try #require(
            listeners.first { $0["name"] == "inbound" }?["filter_chains"]?.arrayValue?.first?["filters"]?.arrayValue?.first?["typed_config"])
        #expect(inbound["access_log_options"]?["flush_access_log_on_new_request"] == .bool(true))
        // Behind the entry service, admissions alone are logged; the entry service logs ends too.
        let authLog = try #require(inbound["access_log"]?.arrayValue?.first)
        #expect(authLog["filter"]?["log_type_filter"]?["types"] == ["DownstreamStart"])
        let portal = try #require(plan.instances.first { $0.service == "portal" })
        let portalListeners = try #require(EnvoyConfig.sidecar(portal, plan: plan).dynamic[.listeners]?["resources"]?.arrayValue)
        let portalInbound = try #require(
            portalListeners.first { $0["name"] == "inbound" }?["filter_chains"]?.arrayValue?.first?["filters"]?.arrayValue?.first?["typed_config"])
        #expect(portalInbound["access_log"]?.arrayValue?.first?["filter"] == nil)
        let outbound = try #require(
            listeners.first { $0["name"] == "out-portal" }?["filter_chains"]?.arrayValue?.first?["filters"]?.arrayValue?.first?["typed_config"])
        let filters = outbound["http_filters"]?.arrayValue?.compactMap { $0["name"]?.stringValue }
        #expect(filters == ["envoy.filters.http.ext_authz", "envoy.filters.http.router"])
        #expect(outbound["http_filters"]?.arrayValue?.first?["typed_config"]?["clear_route_cache"] == .bool(true))
        let inboundRoutes = try #require(files.dynamic[.routes(.inbound)]?["resources"]?.arrayValue?.first?["virtual_hosts"]?.arrayValue?.first)
        #expect(inboundRoutes["response_headers_to_add"]?.arrayValue?.first?["header"]?["value"] == "auth-v1")
        // The auth-v1 cluster a caller uses lists both replicas' sidecars, not the instances.
        let clusters = try #require(EnvoyConfig.sidecar(portal, plan: plan).dynamic[.clusters]?["resources"]?.arrayValue)
        let authV1 = try #require(clusters.first { $0["name"] == "auth-v1" })
        let ports = authV1["load_assignment"]?["endpoints"]?.arrayValue?.first?["lb_endpoints"]?.arrayValue?.compactMap {
            $0["endpoint"]?["address"]?["socket_address"]?["port_value"]
        }
        #expect(ports == plan.instances(of: "auth", version: "v1").map { .number(Double($0.sidecar.inboundPort)) })
    }

    @Test func applicationModeHasNoAuthzHop() throws {
        let plan = try Self.plan(.application)
        for files in [EnvoyConfig.gateway(plan: plan)] + plan.instances.map({ EnvoyConfig.sidecar($0, plan: plan) }) {
            let text = String(decoding: JSONCoding.encode(files.dynamic[.listeners]!), as: UTF8.self)
            #expect(!text.contains("ext_authz"), "\(files.id)")
            #expect(!String(decoding: JSONCoding.encode(files.bootstrap), as: UTF8.self).contains("triad_authz"))
        }
        let gateway = String(decoding: JSONCoding.encode(EnvoyConfig.gateway(plan: plan).dynamic[.listeners]!), as: UTF8.self)
        #expect(gateway.contains("envoy.filters.http.lua"), "the gateway still assigns trace ids")
    }

    /// A caller skips the pin check for a service with one version (no pin can change where its
    /// calls go) and runs it from the moment an upgrade adds a second one.
    @Test func thePinCheckRunsOnlyWhileAServiceHasMoreThanOneVersion() throws {
        var plan = try Self.plan(.mesh)
        let portal = try #require(plan.instances.first { $0.service == "portal" })
        func skipsCheck(_ plan: MeshPlan) throws -> JSONValue? {
            let table = try #require(EnvoyConfig.sidecar(portal, plan: plan).dynamic[.routes(.outbound(service: "auth"))]?["resources"]?.arrayValue?.first)
            return table["virtual_hosts"]?.arrayValue?.first?["typed_per_filter_config"]?["envoy.filters.http.ext_authz"]?["disabled"]
        }
        func auth(_ routes: ServiceRoutes) { plan.routes = plan.routes.map { $0.service == "auth" ? routes : $0 } }
        auth(ServiceRoutes(service: "auth", versions: ["v1"], defaultVersion: "v1"))
        #expect(try skipsCheck(plan) == .bool(true))
        auth(ServiceRoutes(service: "auth", versions: ["v1", "v2"], defaultVersion: "v1"))
        #expect(try skipsCheck(plan) == nil, "an upgrade's second version turns the check on")
        auth(ServiceRoutes(service: "auth", versions: ["v2"], defaultVersion: "v2", blocked: ["v1"]))
        #expect(try skipsCheck(plan) == nil)
        plan.pinPropagation = .application
        auth(ServiceRoutes(service: "auth", versions: ["v1"], defaultVersion: "v1"))
        #expect(try skipsCheck(plan) == nil, "no check to skip")
    }

    /// The gateway skips the check for a request that pins nothing while the service it enters
    /// has one version; a request that carries a pin is still checked (an unknown version is
    /// refused there).
    @Test func theGatewayChecksOnlyPinnedRequestsToAServiceWithOneVersion() throws {
        var plan = try Self.plan(.mesh)
        func gatewayRoutes(_ plan: MeshPlan) throws -> [JSONValue] {
            let table = try #require(EnvoyConfig.gateway(plan: plan).dynamic[.routes(.gateway)]?["resources"]?.arrayValue?.first)
            return try #require(table["virtual_hosts"]?.arrayValue?.first?["routes"]?.arrayValue)
        }
        var routes = try gatewayRoutes(plan)
        #expect(routes.count == 4, "the unpinned route, then the pin, unknown-pin and default routes")
        #expect(routes[0]["match"]?["headers"] == [["name": "x-version", "present_match": false]])
        #expect(routes[0]["typed_per_filter_config"]?["envoy.filters.http.ext_authz"]?["disabled"] == .bool(true))
        #expect(routes[0]["name"] == routes[3]["name"], "its records read as the default route's")
        #expect(routes.dropFirst().allSatisfy { $0["typed_per_filter_config"] == nil })
        plan.routes = plan.routes.map { $0.service == "portal" ? ServiceRoutes(service: "portal", versions: ["v1", "v2"], defaultVersion: "v1") : $0 }
        routes = try gatewayRoutes(plan)
        #expect(routes.allSatisfy { $0["typed_per_filter_config"] == nil }, "during an upgrade every request is checked")
        plan.pinPropagation = .application
        plan.routes = try Self.plan(.mesh).routes
        #expect(try gatewayRoutes(plan).count == 3, "no check to skip")
    }

    /// The benchmark's baseline keeps the listeners and routes and drops everything Triad adds.
    @Test func plainEnvoyRoutesOnlyAndShipsNothing() throws {
        var plan = try Self.plan(.mesh)
        plan.plainEnvoy = true
        for files in [EnvoyConfig.gateway(plan: plan)] + plan.instances.map({ EnvoyConfig.sidecar($0, plan: plan) }) {
            let lds = String(decoding: JSONCoding.encode(files.dynamic[.listeners]!), as: UTF8.self)
            let bootstrap = String(decoding: JSONCoding.encode(files.bootstrap), as: UTF8.self)
            for added in ["ext_authz", "access_log", "envoy.filters.http.lua", "local_reply_config"] { #expect(!lds.contains(added), "\(files.id): \(added)") }
            #expect(!bootstrap.contains("triad_authz") && !bootstrap.contains("triad_log"))
            #expect(files.dynamic.keys.contains { $0.name.hasPrefix("rds-") }, "the same route tables")
        }
    }
}
