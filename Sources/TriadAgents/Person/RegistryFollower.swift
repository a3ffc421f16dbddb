import Foundation
import Logging
import NIOHTTP1
import Synchronization
import TriadClient
import TriadCore

/// The part of the registry that person agents act on, kept current the way an informer does:
/// list every resource once, then follow `GET /api/v1/events` from the list's revision (resuming
/// from the last event id after a dropped stream; listing again only when the resume point is
/// gone, 410). It holds every resource placed in a space (label `triad.io/space`) with its
/// operations, and hands each resource's newest document to `onResource` (a person agent
/// watches its own for locations sent as telemetry).
final class RegistryFollower: Sendable {
    static let spaceLabel = "triad.io/space"

    /// A resource placed in a space.
    struct Placed: Sendable, Equatable {
        struct Operation: Sendable, Equatable {
            var name: String
            var price: Double
        }
        var space: String
        var kind: String
        var accessMode: String?
        var operations: [Operation]

        init?(_ document: JSONValue) {
            guard let space = document["metadata"]?["labels"]?[RegistryFollower.spaceLabel]?.stringValue else { return nil }
            self.space = space
            kind = document["spec"]?["kind"]?.stringValue ?? ""
            accessMode = document["spec"]?["accessMode"]?.stringValue
            operations = (document["spec"]?["operations"]?.arrayValue ?? []).compactMap { op in
                op["name"]?.stringValue.map { Operation(name: $0, price: op["price"]?.numberValue ?? 0) }
            }
        }
    }

    typealias SpacesChanged = @Sendable (Set<String>) async -> Void
    typealias ResourceSeen = @Sendable (String, JSONValue?) async -> Void

    let client: TriadClient
    let logger: Logger
    private let placed = Mutex<[String: Placed]>([:])

    init(client: TriadClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// The resources in `space`, by name.
    func resources(in space: String) -> [(name: String, placed: Placed)] {
        placed.withLock { all in all.filter { $0.value.space == space }.map { ($0.key, $0.value) }.sorted { $0.name < $1.name } }
    }

    func placement(of name: String) -> Placed? { placed.withLock { $0[name] } }

    /// Until cancelled: list, follow, resume; back-off 0.5 s doubling to 5 s after a failure.
    /// `onSpacesChanged` gets the spaces whose contents or their operations changed;
    /// `onResource` every resource's newest document (nil: deleted).
    func run(onSpacesChanged: SpacesChanged, onResource: ResourceSeen) async {
        var resumeFrom: String?
        var delay: Duration = .milliseconds(500)
        while !Task.isCancelled {
            do {
                if resumeFrom == nil { resumeFrom = try await relist(onSpacesChanged, onResource) }
                let cursor = Mutex(resumeFrom)
                try await client.streamEvents(query: "?types=" + Self.resourceEventTypes.joined(separator: ","), lastEventID: resumeFrom) { id, _, data in
                    await self.apply(data, onSpacesChanged, onResource)
                    if !id.isEmpty { cursor.withLock { $0 = id } }
                }
                resumeFrom = cursor.withLock { $0 }
                delay = .milliseconds(500)
            } catch let failure as TriadClient.Failure where failure.status == 410 {
                logger.info("the event log no longer holds the resume point; listing again")
                resumeFrom = nil
                continue
            } catch {
                if Task.isCancelled { break }
                logger.warning("cannot follow the registry; trying again", metadata: ["error": "\(error)", "retry.in": "\(delay)"])
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(5))
        }
    }

    /// Lists every resource; answers the revision to follow from.
    private func relist(_ onSpacesChanged: SpacesChanged, _ onResource: ResourceSeen) async throws -> String {
        var all: [String: JSONValue] = [:]
        var revision: String?
        var next: String?
        repeat {
            let query = "?limit=1000" + (next.map { "&continue=" + ($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? $0) } ?? "")
            let page = try await client.call(.GET, "/api/v1/resources" + query).json
            // The first page's revision: events after it replay whatever changed while paging.
            if revision == nil { revision = page?["metadata"]?["resourceVersion"]?.stringValue }
            for item in page?["items"]?.arrayValue ?? [] {
                if let name = item["metadata"]?["name"]?.stringValue { all[name] = item }
            }
            next = page?["metadata"]?["continue"]?.stringValue
        } while next != nil
        let listed = all.compactMapValues(Placed.init)
        let changed = placed.withLock { current -> Set<String> in
            var spaces = Set<String>()
            for name in Set(current.keys).union(listed.keys) where current[name] != listed[name] {
                if let s = current[name]?.space { spaces.insert(s) }
                if let s = listed[name]?.space { spaces.insert(s) }
            }
            current = listed
            return spaces
        }
        for (name, document) in all { await onResource(name, document) }
        await onSpacesChanged(changed)
        return revision ?? "0"
    }

    /// The events whose data is the resource after the change (bindings and invocations carry
    /// other data).
    static let resourceEventTypes = ["created", "updated", "status", "deleted"].map { "io.triad.resource." + $0 }

    /// One registry event: a CloudEvent whose data is the resource after the change.
    private func apply(_ data: Data, _ onSpacesChanged: SpacesChanged, _ onResource: ResourceSeen) async {
        guard let event = try? JSONCoding.parse(data), let type = event["type"]?.stringValue, Self.resourceEventTypes.contains(type),
            let name = event["subject"]?.stringValue, let document = event["data"],
            document["metadata"]?["name"]?.stringValue == name
        else { return }
        let deleted = event["type"]?.stringValue == "io.triad.resource.deleted"
        let now = deleted ? nil : Placed(document)
        let changed = placed.withLock { current -> Set<String> in
            let before = current[name]
            guard before != now else { return [] }
            current[name] = now
            return Set([before?.space, now?.space].compactMap { $0 })
        }
        await onResource(name, deleted ? nil : document)
        if !changed.isEmpty { await onSpacesChanged(changed) }
    }
}
