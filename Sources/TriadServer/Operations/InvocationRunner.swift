import AsyncHTTPClient
import Foundation
import Logging
import Metrics
import NIOCore
import ServiceLifecycle
import Synchronization
import TriadCore

/// Carries invocations through their states and into the ledger: recorded `invoked` before the
/// call, `completed` after it, each with its event. Calls made with `Prefer: respond-async` run
/// here in the background, children of this service's task group, so they finish even when the
/// client has gone; graceful shutdown takes no new ones and waits for those running (each is
/// bounded by the invoke timeout).
final class InvocationRunner: Service, Sendable {
    let registry: Registry
    let caller: UpstreamCaller
    /// This server, as the ledger names it (a restarted server fails what it left unfinished).
    let node: String
    let logger: Logger
    /// Wakes event streams after each record (its event is in the log).
    let written: @Sendable () -> Void
    private let jobs: AsyncStream<Job>
    private let submit: AsyncStream<Job>.Continuation
    /// The calls this server is making now, by invocation id: the secret sent upstream with each
    /// (header `Triad-Invocation`) and its caller. A call made for one of them presents it.
    private let links = Mutex<[String: (secret: String, caller: String)]>([:])
    /// The calls whose `invoked` event is not announced yet (see `begin`).
    private let late: LateAnnouncements

    /// The header that carries an invocation's link upstream, and back on the calls made for it.
    static let linkHeader = "triad-invocation"
    /// The longest a call's `invoked` event waits to be announced (see `begin`).
    static let announceWithin: Duration = .milliseconds(50)

    struct Job: Sendable {
        var invocation: Invocation
        var resource: StoredResource
        var action: HTTPActionSpec
        var query: [(String, String)]
        var body: Data?
    }

    struct Outcome: Sendable {
        var invocation: Invocation
        var answer: UpstreamCaller.Answer?
        var failure: UpstreamCaller.Failure?
    }

    init(registry: Registry, caller: UpstreamCaller, node: String, logger: Logger, written: @escaping @Sendable () -> Void) {
        self.registry = registry
        self.written = written
        self.caller = caller
        self.node = node
        self.logger = logger
        self.late = LateAnnouncements(after: Self.announceWithin, announce: written)
        (jobs, submit) = AsyncStream<Job>.makeStream()
    }

    /// A new invocation, recorded (`invoked`) before anything is called. `incomingTrace`: the
    /// trace the caller's request continues (its `traceparent` or `x-b3-traceid`). `link`: the
    /// request's `Triad-Invocation` header; when it names a call this server is making for the
    /// same caller, with its secret (only that call's upstream has it), this one is made for it:
    /// its `parent`, charged there.
    func begin(
        resource: StoredResource, operation: ResourceOperationSpec, caller principal: Principal, async: Bool, incomingTrace: String? = nil,
        link: String? = nil
    ) async throws -> Invocation {
        let trace = Invocation.newTrace(continuing: incomingTrace)
        var fresh = Invocation(
            id: Secrets.uuid(), resource: resource.name, operation: operation.name,
            caller: principal.name, price: operation.price ?? 0, state: async ? .pending : .running,
            startedAt: Timestamp.format(Date()), traceId: trace.traceId, traceparent: trace.traceparent, node: node)
        if let link, let parent = linkedParent(link, caller: principal.name) { fresh.parent = parent }
        let recorded = try await registry.record(fresh, as: .invoked, resource: resource)
        // A call made now has its `invoked` event announced by `perform`, with its `completed`
        // one: waking every event follower while the call is being made took the CPU the call
        // needed (on two cores, a third of a millisecond of an agent's call).
        if async { written() }
        return recorded
    }

    /// Calls the upstream and records the outcome (`completed`). `eventLoop`: the caller's
    /// connection's loop, for a call answered in the same request (nil: any).
    func perform(_ job: Job, on eventLoop: (any EventLoop)? = nil) async -> Outcome {
        var invocation = job.invocation
        // Not yet announced (see `begin`): it is, once answered, or after `announceWithin` if
        // the upstream is slow to answer.
        let unannounced = invocation.state != .pending
        if unannounced { late.began(invocation.id) }
        defer { if unannounced { late.ended(invocation.id) } }
        if invocation.state == .pending {
            invocation.state = .running
            do { try await registry.ledger.saveInvocation(invocation) } catch {
                logger.warning("could not record an invocation as running", metadata: ["invocation": "\(invocation.id)", "error.type": "\(type(of: error))"])
            }
        }
        let start = ContinuousClock.now
        var outcome = Outcome(invocation: invocation)
        let now = { Timestamp.format(Date()) }
        do {
            let secret = Secrets.randomHex(bytes: 16)
            links.withLock { $0[invocation.id] = (secret, invocation.caller) }
            defer { _ = links.withLock { $0.removeValue(forKey: invocation.id) } }
            let answer = try await caller.call(
                job.action, query: job.query, body: job.body,
                trace: (invocation.traceId, invocation.traceparent), link: "\(invocation.id);\(secret)", on: eventLoop)
            outcome.answer = answer
            switch answer.status {
            case ..<400: invocation = invocation.finished(.succeeded, httpStatus: answer.status, reason: nil, message: nil, at: now())
            case ..<500:
                invocation = invocation.finished(
                    .failed, httpStatus: answer.status, reason: "UpstreamRejected",
                    message: "the upstream refused the call with HTTP \(answer.status)", at: now())
            default:
                invocation = invocation.finished(
                    .failed, httpStatus: answer.status, reason: "UpstreamError",
                    message: "the upstream failed with HTTP \(answer.status)", at: now())
            }
        } catch {
            outcome.failure = error
            switch error {
            case .refused(let why): invocation = invocation.finished(.failed, httpStatus: nil, reason: "HostNotAllowed", message: why, at: now())
            case .unreachable(let why): invocation = invocation.finished(.failed, httpStatus: nil, reason: "UpstreamUnreachable", message: why, at: now())
            case .timedOut:
                invocation = invocation.finished(
                    .timedOut, httpStatus: nil, reason: "Timeout",
                    message: "the upstream did not answer within \(caller.timeout)", at: now())
            }
        }
        Counter(label: "triad_invocations_total", dimensions: [("state", invocation.state.rawValue)]).increment()
        let took = (ContinuousClock.now - start).components
        Timer(label: "triad_invocation_upstream_seconds").recordNanoseconds(took.seconds * 1_000_000_000 + took.attoseconds / 1_000_000_000)
        do {
            outcome.invocation = try await registry.record(invocation, as: .completed, resource: job.resource)
            written()
        } catch {
            // Left Running in the ledger; a restart of this server marks it Failed.
            outcome.invocation = invocation
            written()
            logger.error("could not record an invocation's outcome", metadata: ["invocation": "\(invocation.id)", "error.type": "\(type(of: error))"])
        }
        return outcome
    }

    /// The invocation `link` ("<id>;<secret>") names, if this server is making it for `caller`
    /// now and the secret is its own (compared in constant time).
    func linkedParent(_ link: String, caller: String) -> String? {
        let parts = link.split(separator: ";", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 2, let known = links.withLock({ $0[parts[0]] }), known.caller == caller else { return nil }
        return Secrets.constantTimeEqual(parts[1], known.secret) ? parts[0] : nil
    }

    /// Runs `job` in the background (`Prefer: respond-async`); false when shutting down.
    func enqueue(_ job: Job) -> Bool {
        if case .enqueued = submit.yield(job) { return true }
        return false
    }

    func run() async throws {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.late.run() }
                for await job in jobs {
                    group.addTask { _ = await self.perform(job) }
                }
                late.finish()
            }
        } onGracefulShutdown: { [submit] in
            submit.finish()
        }
    }

    /// Marks `Failed` (reason `ServerRestarted`) what this node started and never finished: it
    /// was killed mid-call. Runs before the server takes requests.
    static func failLeftovers(registry: Registry, node: String, logger: Logger) async throws {
        for leftover in try await registry.ledger.unfinishedInvocations(node: node) {
            let failed = leftover.finished(
                .failed, httpStatus: nil, reason: "ServerRestarted",
                message: "the server restarted before the call finished; it may or may not have reached the upstream",
                at: Timestamp.format(Date()))
            let resource =
                try await registry.find(leftover.resource)
                ?? StoredResource(name: leftover.resource, kind: .device, labels: [:], revision: 0, document: Data("{}".utf8))
            _ = try await registry.record(failed, as: .completed, resource: resource)
            logger.notice("invocation left unfinished by a restart marked failed", metadata: ["invocation": "\(leftover.id)"])
        }
    }
}

/// The `invoked` events of calls still waiting for their upstream: one loop announces them once
/// the oldest has waited `after`. A timer task per call did the same at the cost of six thread
/// switches and a quarter of a millisecond of CPU per call on two cores. Announcing wakes the
/// log's followers, who read every event committed so far: every waiting call is announced at once.
final class LateAnnouncements: Sendable {
    private struct State {
        /// When each waiting call began, by invocation id.
        var waiting: [String: ContinuousClock.Instant] = [:]
        /// The loop, while nothing waits.
        var idle: CheckedContinuation<Void, Never>?
        var finished = false
    }
    private let state = Mutex(State())
    private let after: Duration
    private let announce: @Sendable () -> Void

    init(after: Duration, announce: @escaping @Sendable () -> Void) {
        self.after = after
        self.announce = announce
    }

    /// A call began; its `invoked` event is committed.
    func began(_ id: String) {
        let loop = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.waiting[id] = .now
            defer { s.idle = nil }
            return s.idle
        }
        loop?.resume()
    }

    /// The call was answered (its events are announced with its outcome).
    func ended(_ id: String) { _ = state.withLock { $0.waiting.removeValue(forKey: id) } }

    /// Ends `run` (the server is shutting down; calls still running announce with their outcome).
    func finish() {
        state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.finished = true
            defer { s.idle = nil }
            return s.idle
        }?.resume()
    }

    func run() async {
        while let oldest = await oldestWaiting() {
            try? await Task.sleep(until: oldest + after)
            let now = ContinuousClock.now
            let due = state.withLock { s -> Bool in
                guard s.waiting.values.contains(where: { $0 + after <= now }) else { return false }
                s.waiting.removeAll()
                return true
            }
            if due { announce() }
        }
    }

    /// When the oldest waiting call began, once one waits; nil once finished.
    private func oldestWaiting() async -> ContinuousClock.Instant? {
        while true {
            let (oldest, finished) = state.withLock { ($0.waiting.values.min(), $0.finished) }
            if finished { return nil }
            if let oldest { return oldest }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if !s.waiting.isEmpty || s.finished { return true }
                    s.idle = c
                    return false
                }
                if now { c.resume() }
            }
        }
    }
}
