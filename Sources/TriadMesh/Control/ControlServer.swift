import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOFoundationEssentialsCompat
import ServiceLifecycle
import Synchronization
import TriadCore
import UnixSignals

/// The control process of `mesh up`: the log receiver, the authz service Envoy asks on every
/// request (mesh mode), and the control API `mesh status/audit/down` use. Runs until `down`,
/// SIGTERM or SIGINT, then stops everything it started.
public enum MeshControl {
    /// Runs the mesh in this process. `onReady` gets the state once everything is healthy.
    public static func run(
        config: MeshConfig, envoy: String, workingDirectory: String, logger: Logger,
        onReady: @escaping @Sendable (MeshState) async -> Void = { _ in }
    ) async throws {
        let stateDir = MeshState.directory(in: workingDirectory)
        let socketDir = FileManager.default.temporaryDirectory.path + "/triad-mesh-" + MeshState.newToken().prefix(12)
        try FileManager.default.createDirectory(atPath: socketDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: socketDir) }
        let runtime = try MeshRuntime(config: config, envoy: envoy, runDirectory: stateDir + "/run", socketDirectory: socketDir, logger: logger)
        let plan = await runtime.plan
        let receiver = try await LogReceiver.start(path: plan.logSocket, recorder: runtime.recorder, logger: logger)
        do {
            try await serve(runtime: runtime, plan: plan, logger: logger, onReady: onReady)
        } catch {
            await receiver.close()
            throw error
        }
        await receiver.close()
    }

    /// The control API, the authz service and the mesh itself, until `down` or a signal.
    static func serve(
        runtime: MeshRuntime, plan: MeshPlan, logger: Logger,
        onReady: @escaping @Sendable (MeshState) async -> Void
    ) async throws {

        let token = MeshState.newToken()
        let down = OneShot()
        let (controlPort, portKnown) = AsyncStream<Int>.makeStream()
        let published = Mutex<MeshState?>(nil)
        // An upgrade starts and stops processes: the state file lists them for `mesh down`'s
        // fallback (when this process is gone).
        let upgrades = UpgradeController(runtime: runtime, logger: logger) {
            guard var state = published.withLock({ $0 }) else { return }
            state.processes = await runtime.processEntries()
            published.withLock { $0 = state }
            await onReady(state)
        }
        let control = Application(
            router: controlRouter(runtime: runtime, upgrades: upgrades, token: token, down: down),
            configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: nil),
            onServerRunning: { channel in
                portKnown.yield(channel.localAddress?.port ?? 0)
                portKnown.finish()
            },
            logger: logger)
        let authority = PinAuthority(
            recorder: runtime.recorder, routes: runtime.routes,
            gateway: MeshConfig.Gateway(listen: plan.gatewayListen, service: plan.gatewayService, routes: plan.gatewayRoutes))
        let authz = Application(
            responder: CallbackResponder<BasicRequestContext> { request, _ in await authzResponse(authority, request) },
            configuration: .init(address: .unixDomainSocket(path: plan.authzSocket), serverName: nil),
            logger: logger)
        let mesh = MeshService(runtime: runtime, upgrades: upgrades, down: down, logger: logger) {
            var port: Int?
            for await known in controlPort { port = known }
            let state = MeshState(
                name: plan.meshName, controlURL: "http://127.0.0.1:\(port ?? 0)", token: token, pid: Int(getpid()),
                gateway: "http://\(plan.gatewayListen)", runDirectory: plan.runDirectory,
                startedAt: ISO8601DateFormatter().string(from: Date()), processes: await runtime.processEntries())
            published.withLock { $0 = state }
            await onReady(state)
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: control),
                    .init(service: authz),
                    .init(service: mesh, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
        if let failure = mesh.failure.withLock({ $0 }) { throw failure }
    }

    static func authzResponse(_ authority: PinAuthority, _ request: Request) async -> Response {
        let trace = request.headers[.init("x-b3-traceid")!]
        let pins = request.headers[values: .init("x-version")!]
        switch await authority.decideWaiting(path: request.uri.path, trace: trace, xVersion: pins.isEmpty ? nil : pins.joined(separator: ",")) {
        case .allow(let value):
            var headers = HTTPFields()
            if let value { headers[.init("x-version")!] = value }
            return Response(status: .ok, headers: headers)
        case .deny(let problem):
            return Response(
                status: .forbidden, headers: [.contentType: "application/problem+json"],
                body: .init(byteBuffer: ByteBuffer(bytes: JSONCoding.encode(problem) + Data("\n".utf8))))
        case .hold:
            return Response(status: .ok)
        }
    }

    static func controlRouter(runtime: MeshRuntime, upgrades: UpgradeController, token: String, down: OneShot) -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: BearerMiddleware(token: token))
        router.get("/v1/status") { _, _ in json(await runtime.status()) }
        router.get("/v1/audit") { _, _ in json(runtime.recorder.audit()) }
        router.get("/v1/visits/:instance") { _, context in
            json(runtime.recorder.visits(instance: context.parameters.get("instance") ?? "").sorted { $0.start < $1.start })
        }
        router.put("/v1/services/:service/default") { request, context in
            let service = context.parameters.get("service") ?? ""
            let body = try await request.body.collect(upTo: 1 << 16)
            guard let doc = try? JSONCoding.parse(Data(buffer: body)), let version = doc["version"]?.stringValue else {
                return problem(.badRequest, "the body must be {\"version\": \"<version>\"}")
            }
            guard runtime.routes.routes(of: service) != nil else { return problem(.notFound, "no service \(service) in this mesh") }
            do {
                try await runtime.setDefault(service: service, version: version)
            } catch let failure as MeshRuntime.Failure {
                return problem(.unprocessableContent, failure.description)
            }
            return json(await runtime.status())
        }
        router.post("/v1/upgrades") { request, _ in
            let body = try await request.body.collect(upTo: 1 << 16)
            guard let upgrade = try? JSONDecoder().decode(UpgradeRequest.self, from: Data(buffer: body)) else {
                return problem(
                    .badRequest, "the body must be {\"service\", \"to\", \"strategy\"?, \"command\"?, \"upstream\"?, \"drainTimeoutSeconds\"?, \"force\"?}")
            }
            do {
                var response = json(try await upgrades.start(upgrade))
                response.status = .accepted
                return response
            } catch let refusal as UpgradeController.Refusal {
                switch refusal {
                case .unknownService: return problem(.notFound, refusal.description)
                case .busy: return problem(.conflict, refusal.description)
                case .invalid: return problem(.unprocessableContent, refusal.description)
                }
            }
        }
        router.get("/v1/upgrades") { _, _ in json(await upgrades.all()) }
        router.get("/v1/upgrades/:service") { _, context in
            let service = context.parameters.get("service") ?? ""
            guard let status = await upgrades.status(of: service) else { return problem(.notFound, "no upgrade of \(service) was requested") }
            return json(status)
        }
        router.post("/v1/down") { _, _ in
            down.fire()
            return Response(status: .accepted)
        }
        return router
    }

    static func json<T: Encodable>(_ value: T) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: JSONCoding.encode(value))))
    }

    static func problem(_ status: HTTPResponse.Status, _ detail: String) -> Response {
        let doc: JSONValue = ["title": .string(status.reasonPhrase), "status": .int(status.code), "detail": .string(detail)]
        return Response(status: status, headers: [.contentType: "application/problem+json"], body: .init(byteBuffer: ByteBuffer(bytes: JSONCoding.encode(doc))))
    }
}

/// The control API answers only requests carrying the secret from the state file.
struct BearerMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let token: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let header = request.headers[.authorization], Secrets.constantTimeEqual(header, "Bearer \(token)") else {
            return MeshControl.problem(.unauthorized, "send Authorization: Bearer <token> (the token is in .triad-mesh/state.json)")
        }
        return try await next(request, context)
    }
}

/// Starts the mesh, reports it ready, waits for `down` or shutdown, then stops what it started.
final class MeshService: Service, Sendable {
    let runtime: MeshRuntime
    let upgrades: UpgradeController
    let down: OneShot
    let logger: Logger
    let ready: @Sendable () async -> Void
    let failure = Mutex<(any Error)?>(nil)

    init(runtime: MeshRuntime, upgrades: UpgradeController, down: OneShot, logger: Logger, ready: @escaping @Sendable () async -> Void) {
        self.runtime = runtime
        self.upgrades = upgrades
        self.down = down
        self.logger = logger
        self.ready = ready
    }

    func run() async throws {
        do {
            try await runtime.start()
        } catch {
            failure.withLock { $0 = error }
            return
        }
        await ready()
        await withDiscardingTaskGroup { group in
            group.addTask { [upgrades] in await upgrades.run() }
            await withGracefulShutdownHandler {
                await down.wait()
            } onGracefulShutdown: { [down] in
                down.fire()
            }
            logger.info("mesh stopping")
            // An upgrade still running ends here, before the processes it works on stop.
            upgrades.stopAccepting()
            group.cancelAll()
        }
        await runtime.stop()
    }
}
