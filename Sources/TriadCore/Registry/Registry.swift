import Foundation

/// Which version a write expects, and how the caller said so (the answer differs: 409 or 412).
public struct VersionPrecondition: Sendable, Equatable {
    public enum Source: Sendable { case resourceVersion, ifMatch }
    public var source: Source
    /// `nil` for `If-Match: *` (any existing version).
    public var version: String?

    public init(source: Source, version: String?) {
        self.source = source
        self.version = version
    }

    func check(against current: StoredResource?) throws(RegistryError) {
        try check(currentRevision: current?.revision)
    }

    /// `currentRevision`: the stored document's revision, nil when there is none.
    func check(currentRevision: Int64?) throws(RegistryError) {
        let currentVersion = currentRevision.map { String($0) }
        switch (currentRevision, version) {
        case (nil, _):
            if source == .ifMatch { throw .preconditionFailed(current: nil) }
            throw .conflict(current: nil, detail: "the resource does not exist, so version \(version ?? "*") is stale")
        case (_?, nil): return
        case (_?, let expected?):
            if expected == currentVersion { return }
            if source == .ifMatch { throw .preconditionFailed(current: currentVersion) }
            throw .conflict(current: currentVersion, detail: "resourceVersion \(expected) is stale; the current version is \(currentVersion ?? "none")")
        }
    }
}

public struct ListQuery: Sendable, Equatable {
    public var kind: ResourceKind?
    public var selector: LabelSelector
    public var limit: Int
    public var continueToken: String?

    public static let defaultLimit = 500
    public static let maxLimit = 1000

    public init(kind: ResourceKind? = nil, selector: LabelSelector = .everything, limit: Int = ListQuery.defaultLimit, continueToken: String? = nil) {
        self.kind = kind
        self.selector = selector
        self.limit = limit
        self.continueToken = continueToken
    }
}

public struct ResourcePage: Sendable {
    public var items: [StoredResource]
    public var continueToken: String?
    public var revision: Int64
}

/// The registry's rules (server-set fields, generation, preconditions, the outbox), written once
/// over any `RegistryBackend`. It does no I/O of its own.
public struct Registry: Sendable {
    /// Internal, not private: the project rules (Registry+Projects.swift) use it too.
    let backend: any RegistryBackend
    let clock: @Sendable () -> Date
    let makeUID: @Sendable () -> String

    public init(
        backend: any RegistryBackend,
        clock: @escaping @Sendable () -> Date = { Date() },
        makeUID: @escaping @Sendable () -> String = Secrets.uuid
    ) {
        self.backend = backend
        self.clock = clock
        self.makeUID = makeUID
    }

    // MARK: the other ports: what the registry's rules do not cover, by concern

    public var log: any EventLog { backend }
    public var ledger: any LedgerStore { backend }
    public var telemetryHistory: any TelemetryHistory { backend }
    public var relayCursors: any RelayCursors { backend }
    public var leadership: any Leadership { backend }
    public func ping() async throws { try await backend.ping() }

    // MARK: reads

    /// The stored resource, or nil when there is none.
    public func find(_ name: String) async throws -> StoredResource? { try await backend.get(name: name) }

    /// Every resource in name order, a page at a time, unfiltered (for controllers' resyncs).
    public func scan(after: String?, limit: Int) async throws -> [StoredResource] {
        try await backend.list(kind: nil, after: after, limit: limit)
    }

    public func get(_ name: String) async throws -> StoredResource {
        guard let found = try await backend.get(name: name) else { throw RegistryError.notFound(name: name) }
        return found
    }

    public func list(_ query: ListQuery) async throws -> ResourcePage {
        let revision = try await backend.readRevision()
        var after = try query.continueToken.map(ContinueToken.decode)
        let limit = max(1, min(query.limit, ListQuery.maxLimit))
        // Keyset pagination by name: an item that exists for the whole listing is returned exactly once.
        if query.selector.requirements.isEmpty {
            // Every row matches: the backend's page is the answer, taken as it is (no copy).
            var items = try await backend.list(kind: query.kind, after: after, limit: limit + 1)
            guard items.count > limit else { return ResourcePage(items: items, continueToken: nil, revision: revision) }
            items.removeLast(items.count - limit)
            return ResourcePage(items: items, continueToken: ContinueToken.encode(items[limit - 1].name), revision: revision)
        }
        var items: [StoredResource] = []
        while true {
            let batch = try await backend.list(kind: query.kind, after: after, limit: limit + 1)
            for row in batch where query.selector.matches(row.labels) {
                if items.count == limit {
                    return ResourcePage(items: items, continueToken: ContinueToken.encode(items[limit - 1].name), revision: revision)
                }
                items.append(row)
            }
            guard batch.count == limit + 1, let last = batch.last else { break }
            after = last.name
        }
        return ResourcePage(items: items, continueToken: nil, revision: revision)
    }

    // MARK: writes

    /// `mayWriteProbe`: whether the caller may set what a probe runs (`probeImage`, `probeArgs`,
    /// `probeEnabled`); only admins may, since the server runs it.
    public func create(_ incoming: Resource, mayWriteProbe: Bool = true) async throws -> StoredResource {
        let now = Timestamp.format(clock())
        let uid = makeUID()
        return try await backend.withWriteTransaction { tx in
            if try await tx.load(name: incoming.name) != nil { throw RegistryError.alreadyExists(name: incoming.name) }
            try Self.checkProbeWrite(incoming.spec, previous: nil, allowed: mayWriteProbe)
            let revision = try await tx.nextRevision()
            let record = StoredResource(Self.fresh(incoming, uid: uid, now: now, revision: revision), revision: revision)
            try await tx.insert(record)
            try await tx.append(Self.event(.created, record, now))
            return record
        }
    }

    /// Create-or-replace of spec and metadata (`PUT`, `triad apply`). Status is kept.
    public func replace(_ incoming: Resource, precondition: VersionPrecondition?, mayWriteProbe: Bool = true) async throws -> (StoredResource, created: Bool) {
        let now = Timestamp.format(clock())
        let uid = makeUID()
        return try await backend.withWriteTransaction { tx in
            let existing = try await tx.load(name: incoming.name)
            try precondition?.check(against: existing)
            try Self.checkProbeWrite(incoming.spec, previous: try existing?.decode().spec, allowed: mayWriteProbe)
            let revision = try await tx.nextRevision()
            guard let existing else {
                let record = StoredResource(Self.fresh(incoming, uid: uid, now: now, revision: revision), revision: revision)
                try await tx.insert(record)
                try await tx.append(Self.event(.created, record, now))
                return (record, true)
            }
            let current = try existing.decode()
            let record = Self.stamp(Self.adopt(incoming, into: current), previous: current, revision: revision)
            try await tx.update(record)
            try await tx.append(Self.event(.updated, record, now))
            return (record, false)
        }
    }

    /// `PATCH` with a merge patch of the document; status in the patch is ignored (use the subresource).
    public func patch(_ name: String, patch: JSONValue, precondition: VersionPrecondition?, mayWriteProbe: Bool = true) async throws -> StoredResource {
        let now = Timestamp.format(clock())
        return try await backend.withWriteTransaction { tx in
            let existing = try await tx.load(name: name)
            try Self.patchPrecondition(patch, explicit: precondition)?.check(against: existing)
            guard let existing else { throw RegistryError.notFound(name: name) }
            let current = try existing.decode()
            var merged = MergePatch.apply(patch, to: current.jsonTree)
            if case .object(var members) = merged {
                members["status"] = current.status?.jsonTree
                merged = .object(members)
            }
            let violations = ResourceValidator.validate(merged)
            guard violations.isEmpty else { throw RegistryError.invalid(violations) }
            let incoming = try Resource(validated: merged)
            guard incoming.name == name else {
                throw RegistryError.invalid([Violation(pointer: "/metadata/name", message: "cannot be changed (it is \"\(name)\")")])
            }
            try Self.checkProbeWrite(incoming.spec, previous: current.spec, allowed: mayWriteProbe)
            let record = Self.stamp(Self.adopt(incoming, into: current), previous: current, revision: try await tx.nextRevision())
            try await tx.update(record)
            try await tx.append(Self.event(.updated, record, now))
            return record
        }
    }

    public enum StatusWrite: Sendable {
        /// `PUT …/status`: the whole status.
        case replace(JSONValue)
        /// `PATCH …/status`: a merge patch of the status object.
        case merge(JSONValue)
    }

    public func writeStatus(_ name: String, _ write: StatusWrite, precondition: VersionPrecondition?) async throws -> StoredResource {
        let now = Timestamp.format(clock())
        return try await backend.withWriteTransaction { tx in
            let existing = try await tx.load(name: name)
            try precondition?.check(against: existing)
            guard let existing else { throw RegistryError.notFound(name: name) }
            var current = try existing.decode()
            let newStatus: JSONValue
            switch write {
            case .replace(let tree): newStatus = tree
            case .merge(let patch): newStatus = StatusMergePatch.apply(patch, to: current.status?.jsonTree ?? .object([:]))
            }
            var violations = ResourceValidator.validateStatus(newStatus)
            let size = JSONCoding.encode(newStatus).count
            if size > ResourceLimits.maxStatusBytes {
                violations.append(Violation(pointer: "/status", message: "is \(size) bytes; a status may hold at most \(ResourceLimits.maxStatusBytes)"))
            }
            guard violations.isEmpty else { throw RegistryError.invalid(violations) }
            // `bound` and `binding` are the server's: status writes leave them as they are.
            let (bound, binding) = (current.status?.bound, current.status?.binding)
            current.status = try ResourceStatus(validated: newStatus)
            current.status?.bound = bound
            current.status?.binding = binding
            return try await Self.commitStatus(current, as: .status, in: tx, now: now)
        }
    }

    // MARK: bindings (docs/api.md)

    public static let maxBindingSeconds = 86_400

    /// Takes (or, for its holder, renews) the exclusive lease on an `Exclusive` resource.
    /// Returns the record and whether the lease is new.
    public func bind(_ name: String, holder: String, ttlSeconds: Int) async throws -> (StoredResource, acquired: Bool) {
        let now = clock()
        let nowText = Timestamp.format(now)
        let expires = Timestamp.format(now.addingTimeInterval(Double(ttlSeconds)))
        return try await backend.withWriteTransaction { tx in
            guard let existing = try await tx.load(name: name) else { throw RegistryError.notFound(name: name) }
            var current = try existing.decode()
            // Without an access mode a resource is Shared (what `get -o wide` shows, and what
            // invoking assumes).
            guard current.spec.accessMode == .exclusive else {
                throw RegistryError.bindingConflict("\(name) is Shared: only Exclusive resources are bound")
            }
            let lease = current.status?.binding
            let live = lease.flatMap { Timestamp.parse($0.expiresAt) }.map { $0 > now } ?? false
            if let lease, live, lease.holder != holder {
                throw RegistryError.bindingConflict("\(name) is bound by another holder until \(lease.expiresAt)")
            }
            let renewal = live && lease?.holder == holder
            var status = current.status ?? ResourceStatus()
            status.bound = true
            status.binding = Binding(holder: holder, acquiredAt: renewal ? lease!.acquiredAt : nowText, expiresAt: expires)
            current.status = status
            // A renewal is a status change; a new lease is an acquisition.
            return (try await Self.commitStatus(current, as: renewal ? .status : .acquired, in: tx, now: nowText), !renewal)
        }
    }

    /// Gives the lease back. `holder` nil: whoever holds it (operators, and the controller when
    /// it expires). `onlyIfExpired`: release only a lease past its expiry (the controller).
    public func release(_ name: String, holder: String?, onlyIfExpired: Bool = false) async throws -> StoredResource? {
        let now = clock()
        let nowText = Timestamp.format(now)
        return try await backend.withWriteTransaction { tx in
            guard let existing = try await tx.load(name: name) else { throw RegistryError.notFound(name: name) }
            var current = try existing.decode()
            guard let lease = current.status?.binding else {
                if onlyIfExpired { return nil }
                throw RegistryError.bindingConflict("\(name) is not bound")
            }
            if onlyIfExpired, let expiry = Timestamp.parse(lease.expiresAt), expiry > now { return nil }
            if let holder, holder != lease.holder { throw RegistryError.bindingConflict("\(name) is bound by another holder") }
            current.status?.bound = false
            current.status?.binding = nil
            return try await Self.commitStatus(current, as: .released, in: tx, now: nowText)
        }
    }

    // MARK: the ledger

    /// Records an invocation with its event (`invoked` for a new one, `completed` for its final
    /// state) in one transaction, so the ledger and the outbox never disagree. `resource` gives
    /// the event its kind and labels. A new invocation takes the event's revision as its place
    /// in the ledger.
    public func record(_ invocation: Invocation, as type: RegistryEventType, resource: StoredResource) async throws -> Invocation {
        precondition(type == .invoked || type == .completed, "an invocation is recorded as invoked or completed")
        let now = Timestamp.format(clock())
        return try await backend.withWriteTransaction { tx in
            var record = invocation
            let revision = try await tx.nextRevision()
            if type == .invoked { record.sequence = revision }
            try await tx.put(record)
            try await tx.append(
                RegistryEvent(
                    id: revision, type: type, name: resource.name, kind: EventKind(resource.kind),
                    labels: resource.labels, time: now, document: record.document))
            return record
        }
    }

    public func delete(_ name: String, precondition: VersionPrecondition?) async throws -> StoredResource {
        let now = Timestamp.format(clock())
        return try await backend.withWriteTransaction { tx in
            let existing = try await tx.load(name: name)
            try precondition?.check(against: existing)
            guard let existing else { throw RegistryError.notFound(name: name) }
            let revision = try await tx.nextRevision()
            try await tx.delete(name: name)
            var last = try existing.decode()
            last.metadata.resourceVersion = String(revision)
            let record = StoredResource(last, revision: revision)
            try await tx.append(Self.event(.deleted, record, now))
            return record
        }
    }

    // MARK: rules

    /// What a probe runs is the server's own process: a caller who may not set it may still write
    /// the rest of a resource that has one, as long as the probe fields stay as they are.
    static func checkProbeWrite(_ spec: ResourceSpec, previous: ResourceSpec?, allowed: Bool) throws {
        guard !allowed else { return }
        var changed: [String] = []
        if spec.probeImage != previous?.probeImage { changed.append("probeImage") }
        if spec.probeArgs != previous?.probeArgs { changed.append("probeArgs") }
        if spec.probeEnabled != previous?.probeEnabled { changed.append("probeEnabled") }
        guard changed.isEmpty else {
            throw RegistryError.forbidden("only an admin may set what a probe runs (spec.\(changed.joined(separator: ", spec.")))")
        }
    }

    /// A new resource: server-set metadata and an initial status; status in the request is ignored.
    static func fresh(_ incoming: Resource, uid: String, now: String, revision: Int64) -> Resource {
        var r = Resource(
            metadata: ObjectMeta(
                name: incoming.name, labels: incoming.metadata.labels,
                annotations: incoming.metadata.annotations),
            spec: incoming.spec)
        r.metadata.uid = uid
        r.metadata.resourceVersion = String(revision)
        r.metadata.generation = 1
        r.metadata.creationTimestamp = now
        var status = ResourceStatus()
        status.phase = .pending
        status.probePhase = .notReady
        status.bound = false
        status.createTime = now
        r.status = status
        return r
    }

    /// What a spec/metadata write takes from the request: labels, annotations and spec. The
    /// server-set metadata and the status stay as they are.
    static func adopt(_ incoming: Resource, into current: Resource) -> Resource {
        var next = current
        next.metadata.labels = incoming.metadata.labels
        next.metadata.annotations = incoming.metadata.annotations
        next.spec = incoming.spec
        return next
    }

    /// A new version of an existing resource: generation moves only when the spec changed.
    static func stamp(_ next: Resource, previous: Resource, revision: Int64) -> StoredResource {
        var r = next
        r.metadata.resourceVersion = String(revision)
        if next.spec != previous.spec { r.metadata.generation = (previous.metadata.generation ?? 0) + 1 }
        return StoredResource(r, revision: revision)
    }

    /// Writes a resource whose status changed (spec and generation untouched) with its event.
    static func commitStatus(_ resource: Resource, as type: RegistryEventType, in tx: any RegistryTransaction, now: String) async throws -> StoredResource {
        var next = resource
        let revision = try await tx.nextRevision()
        next.metadata.resourceVersion = String(revision)
        let record = StoredResource(next, revision: revision)
        try await tx.update(record)
        try await tx.append(event(type, record, now))
        return record
    }

    static func event(_ type: RegistryEventType, _ record: StoredResource, _ now: String) -> RegistryEvent {
        RegistryEvent(
            id: record.revision, type: type, name: record.name, kind: EventKind(record.kind),
            labels: record.labels, time: now, document: record.document)
    }

    /// A `metadata.resourceVersion` inside a merge patch is a precondition, as in Kubernetes.
    static func patchPrecondition(_ patch: JSONValue, explicit: VersionPrecondition?) -> VersionPrecondition? {
        if let explicit { return explicit }
        if case .string(let v)? = patch["metadata"]?["resourceVersion"] { return VersionPrecondition(source: .resourceVersion, version: v) }
        return nil
    }
}

/// `continue` tokens are opaque to clients; inside they carry the last name returned.
public enum ContinueToken {
    public static func encode(_ name: String) -> String {
        Data("n:\(name)".utf8).base64EncodedString()
    }

    public static func decode(_ token: String) throws -> String {
        guard let data = Data(base64Encoded: token), let text = String(data: data, encoding: .utf8), text.hasPrefix("n:") else {
            throw InvalidContinueToken()
        }
        return String(text.dropFirst(2))
    }

    public struct InvalidContinueToken: Error {}
}
