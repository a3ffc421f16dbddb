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
            let revision = try await tx.nextRevision()
            var metadata: [String: JSONValue] = ["name": .string(manifest.name), "resourceVersion": .string(String(revision))]
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
            let next: JSONValue = .object([
                "apiVersion": .string(Resource.apiVersion), "kind": .string(ProjectManifest.kindName),
                "metadata": .object(metadata), "spec": spec, "status": status,
            ])
            let record = StoredProject(name: manifest.name, revision: revision, document: JSONCoding.encode(next))
            try await tx.append(Self.event(existing == nil ? .projectCreated : .projectUpdated, record, labels: next, now))
            return (record, existing == nil)
        }
    }

    /// Replaces a project's status (what the server found checking its repositories). `ifRevision`:
    /// only if the project is still at that revision (a check of an older spec is not recorded).
    public func writeProjectStatus(_ name: String, _ status: JSONValue, ifRevision: Int64? = nil) async throws -> StoredProject {
        let now = Timestamp.format(clock())
        return try await backend.withWriteTransaction { tx in
            guard let existing = try await tx.loadProject(name: name) else { throw RegistryError.notFound(name: name) }
            if let ifRevision, ifRevision != existing.revision {
                throw RegistryError.conflict(current: String(existing.revision), detail: "the project changed since revision \(ifRevision)")
            }
            guard case .object(var members) = try JSONCoding.parse(existing.document), case .object(var metadata)? = members["metadata"] else {
                throw RegistryError.unavailable("stored project \(name) is not a document")
            }
            let revision = try await tx.nextRevision()
            metadata["resourceVersion"] = .string(String(revision))
            members["metadata"] = .object(metadata)
            members["status"] = status
            let next = JSONValue.object(members)
            let record = StoredProject(name: name, revision: revision, document: JSONCoding.encode(next))
            try await tx.append(Self.event(.projectStatus, record, labels: next, now))
            return record
        }
    }

    public func deleteProject(_ name: String, precondition: VersionPrecondition?) async throws -> StoredProject {
        let now = Timestamp.format(clock())
        return try await backend.withWriteTransaction { tx in
            let existing = try await tx.loadProject(name: name)
            try precondition?.check(currentRevision: existing?.revision)
            guard let existing, case .object(var members) = try JSONCoding.parse(existing.document),
                case .object(var metadata)? = members["metadata"]
            else { throw RegistryError.notFound(name: name) }
            let revision = try await tx.nextRevision()
            metadata["resourceVersion"] = .string(String(revision))
            members["metadata"] = .object(metadata)
            let last = JSONValue.object(members)
            let record = StoredProject(name: name, revision: revision, document: JSONCoding.encode(last))
            try await tx.append(Self.event(.projectDeleted, record, labels: last, now))
            return record
        }
    }

    static func event(_ type: RegistryEventType, _ record: StoredProject, labels document: JSONValue, _ now: String) -> RegistryEvent {
        RegistryEvent(
            id: record.revision, type: type, name: record.name, kind: .project,
            labels: document["metadata"]?["labels"]?.objectValue?.compactMapValues(\.stringValue) ?? [:], time: now, document: record.document)
    }
}
