/// Every committed resource of a registry held in memory, in name order: the SQLite backend's
/// (it is the file's only writer, holding a lock on it, so the index is exact: it changes only
/// after a write transaction commits) and the in-memory backend's. Reads by name and lists never
/// touch the disk.
public struct ResourceIndex: Sendable {
    public init() {}

    public private(set) var byName: [String: StoredResource] = [:]
    /// Names in byte order (resource names are ASCII), as `continue` tokens expect.
    private var names = SortedNames()
    /// The last committed revision.
    public var revision: Int64 = 0

    public mutating func put(_ record: StoredResource) {
        if byName.updateValue(record, forKey: record.name) == nil { names.insert(record.name) }
    }

    public mutating func remove(_ name: String) {
        if byName.removeValue(forKey: name) != nil { names.remove(name) }
    }

    /// Up to `limit` resources named after `after`, of `kind` if given.
    public func page(kind: ResourceKind?, after: String?, limit: Int) -> [StoredResource] {
        var out: [StoredResource] = []
        guard limit > 0 else { return out }
        for name in names.sequence(after: after) {
            if let record = byName[name], kind == nil || record.kind == kind {
                out.append(record)
                if out.count == limit { break }
            }
        }
        return out
    }
}

/// A set of names in order, kept in chunks of a few hundred: an insert or a removal moves the
/// names of one chunk, not of the whole registry (one sorted array moved half a million bytes
/// per create once the registry held a hundred thousand resources).
struct SortedNames: Sendable {
    private var chunks: [[String]] = []
    /// A chunk that grows past this is split in two.
    static let chunkLimit = 512

    /// Inserts `name`, which is not in the set.
    mutating func insert(_ name: String) {
        guard !chunks.isEmpty else {
            chunks = [[name]]
            return
        }
        let c = min(chunkIndex(for: name), chunks.count - 1)
        chunks[c].insert(name, at: Self.insertionPoint(of: name, in: chunks[c]))
        if chunks[c].count > Self.chunkLimit {
            let upper = Array(chunks[c][(Self.chunkLimit / 2)...])
            chunks[c].removeSubrange((Self.chunkLimit / 2)...)
            chunks.insert(upper, at: c + 1)
        }
    }

    mutating func remove(_ name: String) {
        let c = chunkIndex(for: name)
        guard c < chunks.count else { return }
        let i = Self.insertionPoint(of: name, in: chunks[c])
        guard i < chunks[c].count, chunks[c][i] == name else { return }
        chunks[c].remove(at: i)
        if chunks[c].isEmpty { chunks.remove(at: c) }
    }

    /// The names after `after` (all of them for nil), in order.
    func sequence(after: String?) -> some Sequence<String> {
        var c = 0
        var i = 0
        if let after {
            c = chunkIndex(for: after)
            if c < chunks.count {
                i = Self.insertionPoint(of: after, in: chunks[c])
                if i < chunks[c].count, chunks[c][i] == after { i += 1 }
            }
        }
        return AnyIterator<String> { [chunks] in
            while c < chunks.count {
                if i < chunks[c].count {
                    defer { i += 1 }
                    return chunks[c][i]
                }
                c += 1
                i = 0
            }
            return nil
        }
    }

    /// The first chunk whose last name is not less than `name` (`chunks.count` if none).
    private func chunkIndex(for name: String) -> Int {
        var low = 0
        var high = chunks.count
        while low < high {
            let mid = (low + high) / 2
            if chunks[mid].last! < name { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// The first position in `chunk` whose name is not less than `name` (binary search).
    private static func insertionPoint(of name: String, in chunk: [String]) -> Int {
        var low = 0
        var high = chunk.count
        while low < high {
            let mid = (low + high) / 2
            if chunk[mid] < name { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
