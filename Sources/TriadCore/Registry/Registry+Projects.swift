import Foundation

/// Projects in the registry (docs/projects.md): documents with the resources' rules (server-set
/// metadata, generation on spec changes, `resourceVersion`/`If-Match` preconditions) whose every
/// write is one project event in the same log. The event is the change: backends write the
/// project from it.
extension Registry {
    public func project(_ name: String) async throws -> StoredProject {
        guard let found = try await backend.project(name: name) else { throw RegistryError.notFound(name: name) }
        return found
    }

    public func projects() async throws -> [StoredProject] { try await backend.projects() }

    /// Create-or-replace of a project's spec and metadata (`PUT`, `triad project apply`); the
    /// status is kept. The document is validated first (every problem at once).
    /// `onlyCreate`: refuse (already exists) rather than replace (`POST`).
    public func applyProject(_ document: JSONValue, precondition: VersionPrecondition?, onlyCreate: Bool = false) async throws -> (
        StoredProject, created: Bool
    ) {
        let manifest: ProjectManifest
        do { manifest = try ProjectManifest.parse(document) } catch { throw RegistryError.invalid(error.violations) }
        let now = Timestamp.format(clock())
        let uid = makeUID()
        return try await backend.withWriteTransaction { tx in
            let existing = try await tx.loadProject(name: manifest.name)
            if onlyCreate, existing != nil { throw RegistryError.alreadyExists(name: manifest.name) }
            try precondition?.check(currentRevision: existing?.revision)
            let current = try existing.map { try JSONCoding.parse($0.document) }
            var metadata: [String: JSONValue] = ["name": .string(manifest.name)]
            for key in ["labels", "annotations"] { metadata[key] = document["metadata"]?[key] }
            let spec = document["spec"] ?? .object([:])
            var status: JSONValue = .object([:])
            if let current {
                for key in ["uid", "creationTimestamp"] { metadata[key] = current["metadata"]?[key] }
                let generation = current["metadata"]?["generation"]?.numberValue ?? 1
                metadata["generation"] = .number(current["spec"] == spec ? generation : generation + 1)
                status = current["status"] ?? status
            } else {
                metadata["uid"] = .string(uid)
                metadata["creationTimestamp"] = .string(now)
                metadata["generation"] = .number(1)
            }
            let next: [String: JSONValue] = [
                "apiVersion": .string(Resource.apiVersion), "kind": .string(ProjectManifest.kindName),
                "metadata": .object(metadata), "spec": spec, "status": status,
            ]
            let record = try await Self.commit(next, name: manifest.name, as: existing == nil ? .projectCreated : .projectUpdated, in: tx, now: now)
            return (record, existing == nil)
        }
    }

    /// Sets fields of a project's status (what the server found checking its repositories); the
    /// others (the services' current versions and their update history) are kept. `ifRevision`:
    /// only if the project is still at that revision (a check of an older spec is not recorded).
    public func writeProjectStatus(_ name: String, _ fields: [String: JSONValue], ifRevision: Int64? = nil) async throws -> StoredProject {
        try await changeProjectStatus(name, ifRevision: ifRevision) { status, _ in
            status.merge(fields) { _, new in new }
        }
    }

    /// How many updates a project's `status.history` keeps (the oldest go first).
    public static let projectHistoryLimit = 100

    /// Records an update of one of a project's services (`triad project update`): appended to
    /// `status.history`, stamped with `time`; when it put its version live (`current` given),
    /// that becomes the service's entry in `status.current`.
    public func recordProjectUpdate(_ name: String, service: String, entry: [String: JSONValue], current: [String: JSONValue]?) async throws
        -> StoredProject
    {
        try await changeProjectStatus(name, ifRevision: nil) { status, now in
            var stamped = entry
            stamped["time"] = .string(now)
            var history = status["history"]?.arrayValue ?? []
            history.append(.object(stamped))
            status["history"] = .array(Array(history.suffix(Self.projectHistoryLimit)))
            if var current {
                current["since"] = .string(now)
                var all = status["current"]?.objectValue ?? [:]
                all[service] = .object(current)
                status["current"] = .object(all)
            }
        }
    }

    private func changeProjectStatus(
        _ name: String, ifRevision: Int64?, _ change: @escaping @Sendable (inout [String: JSONValue], String) -> Void
    ) async throws -> StoredProject {
        let now = Timestamp.format(clock())
        return try await backend.withWriteTransaction { tx in
            guard let existing = try await tx.loadProject(name: name) else { throw RegistryError.notFound(name: name) }
            if let ifRevision, ifRevision != existing.revision {
                throw RegistryError.conflict(current: String(existing.revision), detail: "the project changed since revision \(ifRevision)")
            }
            guard case .object(var members) = try JSONCoding.parse(existing.document) else {
                throw RegistryError.unavailable("stored project \(name) is not a document")
            }
            var status = members["status"]?.objectValue ?? [:]
            change(&status, now)
            members["status"] = .object(status)
            return try await Self.commit(members, name: name, as: .projectStatus, in: tx, now: now)
        }
    }

    public func deleteProject(_ name: String, precondition: VersionPrecondition?) async throws -> StoredProject {
        let now = Timestamp.format(clock())
        return try await backend.withWriteTransaction { tx in
            let existing = try await tx.loadProject(name: name)
            try precondition?.check(currentRevision: existing?.revision)
            guard let existing, case .object(let members) = try JSONCoding.parse(existing.document) else { throw RegistryError.notFound(name: name) }
            return try await Self.commit(members, name: name, as: .projectDeleted, in: tx, now: now)
        }
    }

    /// Takes the next revision, stamps it into the document's `metadata.resourceVersion`, and
    /// appends the event that is the change (the backend writes the project from it).
    static func commit(
        _ document: [String: JSONValue], name: String, as type: RegistryEventType, in tx: any RegistryTransaction, now: String
    ) async throws -> StoredProject {
        let revision = try await tx.nextRevision()
        var members = document
        var metadata = members["metadata"]?.objectValue ?? [:]
        metadata["resourceVersion"] = .string(String(revision))
        members["metadata"] = .object(metadata)
        let record = StoredProject(name: name, revision: revision, document: JSONCoding.encode(JSONValue.object(members)))
        try await tx.append(
            RegistryEvent(
                id: revision, type: type, name: name, kind: .project,
                labels: metadata["labels"]?.objectValue?.compactMapValues(\.stringValue) ?? [:], time: now, document: record.document))
        return record
    }
}
