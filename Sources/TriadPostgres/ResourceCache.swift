import Foundation
import Logging
import Synchronization
import TriadCore

/// The resources of a PostgreSQL registry held in memory by one replica, so that reads by name
/// and lists (label selectors filter the same pages) never reach the database.
///
/// It is kept current from two sides:
/// - this replica's own writes, applied the moment they commit (a read after a write on the
///   same replica sees it); when nothing else was written meanwhile, the cache's position moves
///   past them too, so a list after a write reports that write's revision;
/// - the event log, followed by id (`catchUp`) whenever PostgreSQL notifies a write and once a
///   second besides. Event ids are the registry's revisions, gap-free and committed in order, so
///   a notification lost on the way is caught up at the next wake and never guessed; a gap in
///   the ids (the log compacted past this replica's position) reloads the whole table.
///
/// Older news never overwrites newer: a resource keeps the highest revision seen, and a
/// deletion by this replica is remembered until the log passes it.
///
/// Bounded: past `limit` resources the cache turns itself off and every read goes to the
/// database until the server restarts.
final class ResourceCache: Sendable {
    private struct State {
        /// `index.revision` is how far the event log has been followed.
        var index = ResourceIndex()
        /// This replica's deletions that the log has not been followed to yet: name → revision.
        var deletions: [String: Int64] = [:]
        /// The newest events followed, through `index.revision`. Its `oldestRetained` is the
        /// first event it took, not the table's: it answers only readers it has every event for.
        var recent = RecentEvents(oldestRetained: nil)
        var enabled = true
    }

    private let state = Mutex(State())
    let limit: Int
    private let logger: Logger

    init(limit: Int, logger: Logger) {
        self.limit = limit
        self.logger = logger
    }

    /// Turns the cache off once it holds more than `limit` resources.
    private func keepWithinLimit(_ s: inout State) {
        guard s.enabled, s.index.byName.count > limit else { return }
        s = State(enabled: false)
        logger.warning("the registry outgrew the read cache's limit; reads go to the database", metadata: ["limit": "\(limit)"])
    }

    /// `body` on the index, or nil when the cache is off (read the database).
    func read<T>(_ body: (ResourceIndex) -> T) -> T? {
        state.withLock { $0.enabled ? body($0.index) : nil }
    }

    var followedRevision: Int64 { state.withLock { $0.index.revision } }

    /// Whether reads are served from memory (false once the registry outgrew `limit`).
    var isOn: Bool { state.withLock { $0.enabled } }

    /// Replaces the contents: `resources` read after the log's position `revision` was.
    func reload(_ resources: [StoredResource], revision: Int64) {
        state.withLock { s in
            guard resources.count <= limit else {
                s = State(enabled: false)
                logger.warning(
                    "the registry holds more resources than the read cache's limit; reads go to the database",
                    metadata: ["resources": "\(resources.count)", "limit": "\(limit)"])
                return
            }
            var index = ResourceIndex()
            for r in resources { index.put(r) }
            index.revision = revision
            s.index = index
            s.deletions = [:]
            s.recent = RecentEvents(oldestRetained: nil)
        }
    }

    /// A group of this replica's writes, just committed. When the cache had followed the log up
    /// to the group's start, it now reflects everything through its end.
    func applyCommitted(_ group: CommittedGroup) {
        state.withLock { s in
            guard s.enabled else { return }
            for change in group.changes where (s.index.byName[change.name]?.revision ?? 0) < change.revision {
                if let record = change.record {
                    s.index.put(record)
                    s.deletions[change.name] = nil
                } else {
                    s.index.remove(change.name)
                    if change.revision > s.index.revision { s.deletions[change.name] = change.revision }
                }
            }
            if s.index.revision == group.start {
                for e in group.events { s.recent.add(e) }
                s.index.revision = group.end
                s.deletions = s.deletions.filter { $0.value > group.end }
            }
            keepWithinLimit(&s)
        }
    }

    /// The events after `id`, when the cache has followed the log past `id` and still holds
    /// every event after it; nil: ask the database (it may hold newer ones than the cache).
    func recentEvents(after id: Int64, limit: Int) -> EventBatch? {
        state.withLock { s in
            guard s.enabled, id < s.index.revision else { return nil }
            return s.recent.batch(after: id, limit: limit)
        }
    }

    /// The log's events through `id` were deleted (compaction).
    func compacted(through id: Int64) {
        state.withLock { $0.recent.compacted(oldestRetained: id + 1) }
    }

    /// Applies events read from the log after `followedRevision`, in id order. Returns false when
    /// they do not follow on (a gap: the caller reloads).
    func follow(_ events: [RegistryEvent]) -> Bool {
        state.withLock { s in
            // What this replica's own commits already moved the cache past is skipped.
            let events = events.drop { $0.id <= s.index.revision }
            guard s.enabled, let first = events.first, let last = events.last else { return true }
            guard first.id == s.index.revision + 1 else { return false }
            for e in events { s.recent.add(e) }
            for e in events where e.type.carriesResource {
                if let deleted = s.deletions[e.name], deleted >= e.id { continue }
                if let current = s.index.byName[e.name], current.revision >= e.id { continue }
                if e.type == .deleted {
                    s.index.remove(e.name)
                } else if let kind = ResourceKind(rawValue: e.kind.rawValue) {
                    s.index.put(StoredResource(name: e.name, kind: kind, labels: e.labels, revision: e.id, document: e.document))
                }
            }
            s.index.revision = last.id
            s.deletions = s.deletions.filter { $0.value > last.id }
            keepWithinLimit(&s)
            return true
        }
    }
}
