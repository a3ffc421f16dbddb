/// Every committed resource of a registry held in memory, in name order: the SQLite backend's
/// (it is the file's only writer, holding a lock on it, so the index is exact: it changes only
/// after a write transaction commits) and the in-memory backend's. Reads by name and lists never
/// touch the disk.
public struct ResourceIndex: Sendable {
    public init() {}

    public private(set) var byName: [String: StoredResource] = [:]
    /// Names in byte order (resource names are ASCII), as `continue` tokens expect.
    public private(set) var names: [String] = []
    /// The last committed revision.
    public var revision: Int64 = 0

    public mutating func put(_ record: StoredResource) {
        if byName.updateValue(record, forKey: record.name) == nil {
            names.insert(record.name, at: insertionPoint(after: nil, of: record.name))
        }
    }

    public mutating func remove(_ name: String) {
        guard byName.removeValue(forKey: name) != nil else { return }
        let i = insertionPoint(after: nil, of: name)
        if i < names.count, names[i] == name { names.remove(at: i) }
    }

    /// Up to `limit` resources named after `after`, of `kind` if given.
    public func page(kind: ResourceKind?, after: String?, limit: Int) -> [StoredResource] {
        var out: [StoredResource] = []
        var i =
            after.map { name in
                let point = insertionPoint(after: nil, of: name)
                return point < names.count && names[point] == name ? point + 1 : point
            } ?? 0
        while i < names.count, out.count < limit {
            if let record = byName[names[i]], kind == nil || record.kind == kind { out.append(record) }
            i += 1
        }
        return out
    }

    /// The first index whose name is not less than `name` (binary search).
    private func insertionPoint(after _: String?, of name: String) -> Int {
        var low = 0
        var high = names.count
        while low < high {
            let mid = (low + high) / 2
            if names[mid] < name { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
