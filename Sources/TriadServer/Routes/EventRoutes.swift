import Foundation
import Hummingbird
import Logging
import Metrics
import Synchronization
import TriadCore

/// `GET /api/v1/events`: registry events as Server-Sent Events of CloudEvents, resumable with
/// `Last-Event-ID` (or `?since=`). Without either, the stream starts from now.
struct EventRoutes {
    let registry: Registry
    /// The newest events, read once for every stream; each read wakes the streams.
    let tail: EventTail
    let authority: TokenAuthority
    let streams: StreamCounter
    /// How often an open stream checks that its token is still valid (revocations elsewhere
    /// reach it within this plus the token cache's lifetime).
    static let tokenRecheck: Duration = .seconds(1)
    static let keepAliveInterval: Duration = .seconds(15)
    static let batchSize = 500

    func register(_ routes: RouteTable) {
        routes.on(.get, "/api/v1/events", stream)
    }

    @Sendable func stream(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let principal = try context.require(.readEvents)
        let secret = context.bearerSecret
        // Operations' header values are for those who write resources.
        let redact = !principal.may(.writeResources)
        let params = request.uri.queryParameters
        var types: Set<String>?
        if let list = params.get("types") {
            guard !list.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw Problem.badRequest("types must name at least one event type (leave it out for all)")
            }
            let requested = Set(list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            let known = Set(RegistryEventType.allCases.map(\.cloudEventType))
            let unknown = requested.subtracting(known).sorted()
            if !unknown.isEmpty {
                throw Problem.badRequest("unknown event types \(unknown.joined(separator: ", ")); known: \(known.sorted().joined(separator: ", "))")
            }
            types = requested
        }
        var selector = LabelSelector.everything
        if let text = params.get("labelSelector") {
            do { selector = try LabelSelector(parsing: text) } catch { throw Problem.badRequest(error.message) }
        }
        let follow: Bool
        switch params.get("follow") {
        case nil, "true": follow = true
        case "false": follow = false
        default: throw Problem.badRequest("follow must be true or false")
        }
        // Both are checked when both are given; the header (a reconnecting browser's) wins.
        let resumeTexts = [request.headers.first(where: { $0.name.canonicalName == "last-event-id" })?.value, params.get("since")].compactMap { $0 }
        var resumeIDs: [Int64] = []
        for text in resumeTexts {
            guard let id = Int64(text.trimmingCharacters(in: .whitespaces)), id >= 0 else {
                throw Problem.badRequest("Last-Event-ID and since must be an event id (a non-negative integer)")
            }
            resumeIDs.append(id)
        }
        let start: Int64
        if let id = resumeIDs.first {
            let latest = try await registry.log.latestRevision()
            guard id <= latest else {
                throw Problem.badRequest("Last-Event-ID and since must be an event id this server issued; the newest is \(latest)")
            }
            let first = try await registry.log.events(after: id, limit: 1)
            // `id < oldest - 1`, not `id + 1 < oldest`: an id of Int64.max must not trap.
            if let oldest = first.oldestRetained, id < oldest - 1 {
                throw Problem.gone(
                    "events after \(id) up to \(oldest - 1) were compacted; list resources to resync, then follow from \(try await registry.log.latestRevision())"
                )
            }
            start = id
        } else {
            start = try await registry.log.latestRevision()
        }
        let tail = self.tail
        let wakeups = tail.streams.subscribe()
        let log = registry.log
        let logger = context.logger
        let wanted = types
        let labelFilter = selector
        // A device token watches only its own resource.
        let only: String? = principal.role == .device ? (principal.resource ?? "") : nil
        // Project events go to those who may read projects; a device's name filter is its resource's.
        let projects = principal.may(.readProjects)
        let filter: @Sendable (RegistryEvent) -> Bool = { event in
            (event.kind == .project ? projects : true) && (only.map { event.name == $0 && event.kind != .project } ?? true)
                && (wanted?.contains(event.type.cloudEventType) ?? true) && labelFilter.matches(event.labels)
        }
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache"]
        // A cap per token: one leaked or buggy client cannot hold every connection.
        guard streams.open(principal.name) else {
            var problem = Problem(
                .tooManyRequests, "too-many-streams", "Too many event streams",
                detail: "token \(principal.name) already has \(streams.limit) open event streams; close one first")
            problem.headers[.retryAfter] = "5"
            throw problem
        }
        let (streams, authority) = (self.streams, self.authority)
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                let open = Meter(label: "triad_event_streams")
                open.increment()
                defer {
                    open.decrement()
                    streams.close(principal.name)
                }
                var lastTokenCheck = ContinuousClock.now
                var cursor = start
                var lastWrite = ContinuousClock.now
                // Opening comment: the stream is live even before the first event.
                try await writer.write(ByteBuffer(string: ": stream open from \(cursor)\n\n"))
                var iterator = wakeups.makeAsyncIterator()
                while !Task.isCancelled {
                    // From the shared tail when it holds what comes next; a stream far behind reads
                    // the log itself until it catches up. The backlog alone (follow=false) is read
                    // from the log: the tail may not hold a write this client has just made yet.
                    let events: [RegistryEvent]
                    if follow, let recent = tail.events(after: cursor, limit: Self.batchSize) {
                        events = recent
                    } else {
                        events = try await log.events(after: cursor, limit: Self.batchSize).events
                        tail.countStreamRead()
                    }
                    var out = ByteBuffer()
                    for event in events {
                        cursor = event.id
                        guard filter(event) else { continue }
                        out.writeString("id: \(event.id)\nevent: \(event.type.cloudEventType)\ndata: ")
                        out.writeBytes(CloudEventRenderer.render(redact ? HeaderRedaction.redacted(event) : event))
                        out.writeString("\n\n")
                    }
                    if out.readableBytes > 0 {
                        try await writer.write(out)
                        lastWrite = .now
                    }
                    if events.count == Self.batchSize { continue }
                    // follow=false: the backlog only (what `triad events` without --follow prints).
                    if !follow { break }
                    if ContinuousClock.now - lastWrite >= Self.keepAliveInterval {
                        try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                        lastWrite = .now
                    }
                    guard await iterator.next() != nil else { break }
                    if let secret, ContinuousClock.now - lastTokenCheck >= Self.tokenRecheck {
                        lastTokenCheck = .now
                        guard (try? await authority.authenticate(secret)) ?? nil != nil else {
                            try await writer.write(ByteBuffer(string: ": the token was revoked\n\n"))
                            break
                        }
                    }
                }
                logger.debug("event stream closed")
                try await writer.finish(nil)
            })
    }
}

/// Open event streams per token name, bounded.
final class StreamCounter: Sendable {
    let limit: Int
    private let open = Mutex<[String: Int]>([:])

    init(limit: Int) { self.limit = limit }

    /// Counts one more stream for `name`, unless it is at the limit.
    func open(_ name: String) -> Bool {
        open.withLock { table in
            guard table[name, default: 0] < limit else { return false }
            table[name, default: 0] += 1
            return true
        }
    }

    func close(_ name: String) {
        open.withLock { table in
            let left = table[name, default: 1] - 1
            table[name] = left > 0 ? left : nil
        }
    }
}
