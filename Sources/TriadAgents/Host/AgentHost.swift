import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOFoundationEssentialsCompat
import ServiceLifecycle
import TriadClient
import TriadCore

/// `triad agent --config FILE`: hosts the file's agents on one listener, each under
/// `/agents/<name>/` (docs/agents.md): `GET|PATCH /meta`, `GET /operations`,
/// `POST /operations/{op}`, `GET /healthz`. On start each agent upserts its Resource (operations
/// pointing at the advertised URL), then reports its status and heartbeats (`AgentReady`);
/// stopped, the host marks its resources `Pending`.
///
/// Calls other than the health checks need the host's invocation secret, which the host puts
/// in its operations' `httpAction.headers` (shown only to those who may write resources): only
/// Triad, on behalf of a caller it checked and recorded, reaches a device.
public final class AgentHost: Sendable {
    let config: AgentConfig
    let logger: Logger
    let reporter: TriadReporter
    let agents: [String: any ResourceAgent]
    let devices: [DeviceAgent]
    let persons: [PersonAgent]
    let link: HomeAssistantLink?
    /// Follows the registry for the person agents (only when there are some).
    let follower: RegistryFollower?
    let secret: String

    /// The host's client of Triad and Home Assistant: every call an agent is serving may be
    /// waiting on one (a person's device call), so it keeps as many connections as calls run
    /// (the shared client keeps 8 per host and would queue the rest).
    public static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 256
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    public init(config: AgentConfig, logger: Logger, http: HTTPClient = AgentHost.client) {
        self.config = config
        self.logger = logger
        let triadClient = TriadClient(server: config.triad.url, token: config.triad.token, http: http)
        reporter = TriadReporter(client: triadClient, amqp: config.triad.amqp, logger: logger)
        let secret = "agent_" + (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        self.secret = secret
        let rest = config.homeAssistant.map { HomeAssistantREST(baseURL: $0.url, token: $0.token, http: http) }
        let follower = RegistryFollower(client: triadClient, logger: logger)
        var devices: [DeviceAgent] = []
        var persons: [PersonAgent] = []
        for agent in config.agents {
            switch agent.kind {
            case .device(let device):
                if let rest { devices.append(DeviceAgent(spec: agent, device: device, rest: rest, triad: reporter, secret: secret, logger: logger)) }
            case .person(let person):
                persons.append(
                    PersonAgent(
                        spec: agent, person: person, triad: reporter, own: TriadClient(server: config.triad.url, token: person.token, http: http),
                        directory: follower, secret: secret, heartbeatSeconds: config.heartbeatSeconds, logger: logger))
            }
        }
        self.devices = devices
        self.persons = persons
        self.follower = persons.isEmpty ? nil : follower
        var agents: [String: any ResourceAgent] = [:]
        for device in devices { agents[device.name] = device }
        for person in persons { agents[person.name] = person }
        self.agents = agents
        let allDevices = devices
        link = config.homeAssistant.map { ha in
            HomeAssistantLink(baseURL: ha.url, token: ha.token, logger: logger) { event in
                for device in allDevices { await device.handle(event) }
            }
        }
    }

    /// How many status reports went to `triad.state` and how many over REST.
    public var statusReports: (bus: Int, rest: Int) {
        get async { await reporter.reports }
    }

    /// What Triad sends to reach the agents (their operations' `httpAction.headers`); made at
    /// each start. For whoever embeds the host, e.g. to patch a metamodel without Triad.
    public var invocationSecret: String { secret }

    /// The HTTP application with the host's loops; `onRunning` gets the bound port.
    public func makeApplication(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let (host, port) = (config.listenHost, config.listenPort)
        let advertised = config.advertiseURL
        return Application(
            router: makeRouter(),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            services: [AgentLoops(host: self)],
            onServerRunning: { [reporter] channel in
                let bound = channel.localAddress?.port ?? port
                let reachable = ["0.0.0.0", "::", ""].contains(host) ? "127.0.0.1" : (host.contains(":") ? "[\(host)]" : host)
                await reporter.listening(at: advertised ?? "http://\(reachable):\(bound)")
                await onRunning(bound)
            },
            logger: logger)
    }

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        // First: middleware applies only to the routes added after it.
        router.middlewares.add(ProblemAnswers())
        router.get("/healthz") { _, _ in Response.json(.object(["status": .string("ok")])) }
        let agents = router.group("/agents/:agent")
        agents.get("/healthz") { _, context in
            let agent = try self.agent(context)
            return Response.json(.object(["status": .string("ok"), "agent": .string(agent.name)]))
        }
        agents.get("/meta") { request, context in
            let agent = try self.authorized(request, context)
            return Response.json(await agent.meta())
        }
        agents.patch("/meta") { request, context in
            let agent = try self.authorized(request, context)
            let body = try await Self.body(request)
            guard case .object(let patch) = body else { throw AgentProblem(status: 400, title: "Bad request", detail: "a merge patch must be a JSON object") }
            let meta = try await agent.patchMeta(patch)
            await agent.report()
            return Response.json(meta)
        }
        agents.get("/operations") { request, context in
            let agent = try self.authorized(request, context)
            return Response.json(await agent.operationList())
        }
        agents.post("/operations/:operation") { request, context in
            let agent = try self.authorized(request, context)
            let operation = context.parameters.get("operation") ?? ""
            let body = try await Self.body(request)
            guard case .object(let arguments) = body else {
                throw AgentProblem(status: 400, title: "Bad request", detail: "the arguments must be a JSON object")
            }
            let context = ["traceparent", "triad-invocation"].compactMap { name in request.headers[.init(name)!].map { (name, $0) } }
            return Response.json(try await agent.invoke(operation, arguments: arguments, context: context))
        }
        return router
    }

    private func agent(_ context: BasicRequestContext) throws -> any ResourceAgent {
        let name = context.parameters.get("agent") ?? ""
        guard let agent = agents[name] else { throw AgentProblem(status: 404, title: "Not found", detail: "no agent \(name) here") }
        return agent
    }

    private func authorized(_ request: Request, _ context: BasicRequestContext) throws -> any ResourceAgent {
        let agent = try agent(context)
        let given = request.headers[.authorization] ?? ""
        // Constant time: the comparison must not tell how much of a guess was right.
        let expected = Array("Bearer \(secret)".utf8)
        let actual = Array(given.utf8)
        var difference = UInt8(expected.count == actual.count ? 0 : 1)
        for (i, byte) in expected.enumerated() { difference |= byte ^ (i < actual.count ? actual[i] : 0) }
        guard difference == 0 else {
            throw AgentProblem(
                status: 401, title: "Unauthorized", detail: "call this agent through Triad (POST /api/v1/resources/\(agent.name)/operations/{op})")
        }
        return agent
    }

    static func body(_ request: Request) async throws -> JSONValue {
        let buffer = try await request.body.collect(upTo: 1 << 20)
        if buffer.readableBytes == 0 { return .object([:]) }
        do { return try JSONCoding.parse(Data(buffer: buffer)) } catch {
            throw AgentProblem(status: 400, title: "Bad request", detail: "the body is not JSON: \(error.message)")
        }
    }

    /// Reports every agent now, then on each heartbeat.
    func heartbeats() async {
        while !Task.isCancelled {
            for name in agents.keys.sorted() { await agents[name]!.report() }
            try? await Task.sleep(for: .seconds(config.heartbeatSeconds))
        }
    }

    /// Follows the registry for the person agents: a change in a person's space, or in the
    /// person's own Resource, reaches that person.
    func followRegistry(_ follower: RegistryFollower) async {
        let persons = persons
        await follower.run(
            onSpacesChanged: { spaces in
                for person in persons where person.space.map(spaces.contains) == true { person.wake() }
            },
            onResource: { name, document in
                for person in persons where person.name == name { await person.observe(document) }
            })
    }

    func markStopped() async {
        for name in agents.keys.sorted() { await agents[name]!.stopped() }
    }
}

/// The host's background work: the Home Assistant link, the registry follower, the person
/// agents' writers and the heartbeats, until graceful shutdown; then the resources are marked
/// `Pending`.
struct AgentLoops: Service {
    let host: AgentHost

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                if let link = host.link { group.addTask { await link.run() } }
                if let follower = host.follower { group.addTask { await host.followRegistry(follower) } }
                for person in host.persons { group.addTask { await person.run() } }
                group.addTask { await host.heartbeats() }
            }
        }
        await host.markStopped()
    }
}

/// Agent errors as RFC 9457 problem documents.
struct ProblemAnswers: RouterMiddleware {
    func handle(_ request: Request, context: BasicRequestContext, next: (Request, BasicRequestContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let problem as AgentProblem {
            return Response.problem(problem, instance: request.uri.path)
        } catch let error as HTTPError {
            return Response.problem(
                AgentProblem(status: Int(error.status.code), title: error.status.reasonPhrase, detail: error.body ?? error.status.reasonPhrase),
                instance: request.uri.path)
        }
    }
}

extension Response {
    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: JSONCoding.encode(value))))
    }

    static func problem(_ problem: AgentProblem, instance: String) -> Response {
        let slug = problem.title.lowercased().replacingOccurrences(of: " ", with: "-")
        let body: JSONValue = .object([
            "type": .string("https://triad.io/problems/agent-\(slug)"), "title": .string(problem.title),
            "status": .number(Double(problem.status)), "detail": .string(problem.detail), "instance": .string(instance),
        ])
        return Response(
            status: .init(code: problem.status), headers: [.contentType: "application/problem+json"],
            body: .init(byteBuffer: ByteBuffer(data: JSONCoding.encode(body))))
    }
}
