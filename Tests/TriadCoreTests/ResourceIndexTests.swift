import Foundation
import Testing

@testable import TriadCore

/// The in-memory index pages through names in byte order, however they were inserted and
/// removed, across the chunks it keeps them in.
@Suite("Resource index")
struct ResourceIndexTests {
    static func record(_ name: String, _ kind: ResourceKind) -> StoredResource {
        StoredResource(name: name, kind: kind, labels: [:], revision: 1, document: Data("{}".utf8))
    }

    @Test func pagesFollowByteOrderAcrossInsertsAndRemovals() {
        var generator = SystemRandomNumberGenerator()
        var index = ResourceIndex()
        var expected: [String: ResourceKind] = [:]
        // Several chunks' worth, inserted out of order, some twice (a replace keeps one entry).
        for n in (0..<3000).shuffled(using: &generator) {
            let name = String(format: "dev-%05d", n)
            let kind: ResourceKind = n % 3 == 0 ? .space : .device
            index.put(Self.record(name, kind))
            expected[name] = kind
        }
        for n in stride(from: 0, to: 3000, by: 7) { index.put(Self.record(String(format: "dev-%05d", n), expected[String(format: "dev-%05d", n)]!)) }
        // Removals, a whole chunk's span among them, and one of a name never there.
        for n in Array(0..<40) + Array(stride(from: 1000, to: 1700, by: 1)) + Array(stride(from: 2000, to: 3000, by: 5)) {
            let name = String(format: "dev-%05d", n)
            index.remove(name)
            expected[name] = nil
        }
        index.remove("never-there")
        let sorted = expected.keys.sorted()

        #expect(index.page(kind: nil, after: nil, limit: 10_000).map(\.name) == sorted)
        #expect(index.page(kind: .space, after: nil, limit: 10_000).map(\.name) == sorted.filter { expected[$0] == .space })
        // Page by page with continue names: each page starts after the last one's last name.
        var pages: [String] = []
        var after: String? = nil
        while true {
            let page = index.page(kind: nil, after: after, limit: 97).map(\.name)
            pages += page
            guard let last = page.last else { break }
            after = last
        }
        #expect(pages == sorted)
        // After a name that is not there (removed, or between two), from the next one.
        #expect(index.page(kind: nil, after: "dev-01500", limit: 1).map(\.name) == ["dev-01700"])
        #expect(index.page(kind: nil, after: "dev-00000x", limit: 1).map(\.name) == [sorted.first { $0 > "dev-00000x" }!])
        #expect(index.page(kind: nil, after: "zzz", limit: 5).isEmpty)
        #expect(index.page(kind: nil, after: nil, limit: 0).isEmpty)
    }
}
