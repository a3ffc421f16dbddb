import Foundation
import Testing

@testable import TriadCore

/// The hand-written tree conversions (the registry's write path) give the text and the values the
/// Codable conformance gives, for every field and for numbers of every shape.
@Suite("Resource tree conversions")
struct ResourceTreeTests {
    static func everyField(price: Double) -> Resource {
        var resource = Resource(
            metadata: ObjectMeta(name: "lamp-1", labels: ["triad.io/space": "hall", "b": "2"], annotations: ["note": "a \"quoted\" / slash\n"]),
            spec: ResourceSpec(kind: .device))
        resource.metadata.uid = "0f1e"
        resource.metadata.resourceVersion = "42"
        resource.metadata.generation = 3
        resource.metadata.creationTimestamp = "2026-12-07T10:00:00.000Z"
        resource.spec.icon = "lamp"
        resource.spec.description = ["brand": "Acme", "model": "ü-2"]
        resource.spec.accessMode = .exclusive
        resource.spec.operations = [
            ResourceOperationSpec(
                name: "on", price: price, description: "switch on",
                httpAction: HTTPActionSpec(action: "POST", url: "http://127.0.0.1:9/on", query: ["q": "1"], headers: ["X-A": "b"])),
            ResourceOperationSpec(name: "off", httpAction: HTTPActionSpec(action: "POST", url: "http://127.0.0.1:9/off")),
        ]
        resource.spec.probeImage = "/usr/bin/probe"
        resource.spec.probeArgs = ["--rate", "5"]
        resource.spec.probeEnabled = false
        resource.spec.aliasName = "Lamp"
        var status = ResourceStatus()
        status.phase = .running
        status.probePhase = .synchronous
        status.bound = true
        status.binding = Binding(holder: "app", acquiredAt: "2026-12-07T10:00:00.000Z", expiresAt: "2026-12-07T10:05:00.000Z")
        status.createTime = "2026-12-07T10:00:00.000Z"
        status.startTime = "2026-12-07T10:00:01.000Z"
        status.observedGeneration = 3
        status.conditions = [
            Condition(type: "Ready", status: .true, reason: "Up", message: "ok", lastTransitionTime: "t1", lastHeartbeatTime: "t2"),
            Condition(type: "ProbeConnected", status: .unknown),
        ]
        status.location = ["space": .string("hall"), "floor": .number(3), "xy": .array([.number(1.5), .null, .bool(true)])]
        status.telemetry = TelemetrySnapshot(lastSeen: "t3", values: ["kwh": .number(price), "on": .bool(true), "nested": .object(["a": .string("b")])])
        resource.status = status
        return resource
    }

    @Test(arguments: [3.0, 3.5, 0.1, 1e-7, 12_345_678.9, 1e20, -2.25, 0])
    func theTreeWritesTheCodableText(price: Double) throws {
        let resource = Self.everyField(price: price)
        #expect(String(decoding: JSONCoding.encode(resource.jsonTree), as: UTF8.self) == String(decoding: JSONCoding.encode(resource), as: UTF8.self))
        let stored = StoredResource(resource, revision: 42)
        #expect(stored.document == JSONCoding.encode(resource))
        #expect(try stored.decode() == resource)
        #expect(try JSONDecoder().decode(Resource.self, from: stored.document) == resource)
    }

    @Test func absentOptionalsStayAbsent() throws {
        let bare = Resource(metadata: ObjectMeta(name: "p"), spec: ResourceSpec(kind: .person))
        #expect(JSONCoding.encode(bare.jsonTree) == JSONCoding.encode(bare))
        #expect(try Resource(validated: bare.jsonTree) == bare)
        // JSON null is absent, as for decodeIfPresent; unknown members are ignored.
        var tree = try #require(bare.jsonTree.objectValue)
        tree["status"] = .null
        tree["extra"] = .string("ignored")
        #expect(try Resource(validated: .object(tree)) == bare)
        #expect(try ResourceStatus(validated: .object([:])) == ResourceStatus())
    }

    @Test func aTreeOfAnotherShapeSaysWhere() throws {
        var tree = try #require(Self.everyField(price: 1).jsonTree.objectValue)
        var spec = try #require(tree["spec"]?.objectValue)
        spec["operations"] = .array([.object(["name": .string("x"), "httpAction": .object(["action": .string("GET")])])])
        tree["spec"] = .object(spec)
        #expect(throws: ResourceTreeError.self) { try Resource(validated: .object(tree)) }
        do {
            _ = try Resource(validated: .object(tree))
        } catch let error as ResourceTreeError {
            #expect(error.pointer == "/spec/operations/0/httpAction/url")
        }
        spec["kind"] = .string("Robot")
        tree["spec"] = .object(spec)
        #expect(throws: ResourceTreeError.self) { try Resource(validated: .object(tree)) }
        #expect(throws: ResourceTreeError.self) { try ResourceStatus(validated: .object(["observedGeneration": .number(1.5)])) }
    }
}

@Suite("JSON pointers of violations")
struct PointerEscapeTests {
    @Test func keysWithSlashesAndTildesAreEscapedAndOthersKeptAsTheyAre() {
        #expect(pointerEscape("triad.io/space") == "triad.io~1space")
        #expect(pointerEscape("a~b/c/") == "a~0b~1c~1")
        #expect(pointerEscape("plain-ü") == "plain-ü")
        #expect(pointerEscape("") == "")
    }
}

@Suite("Invocation documents")
struct InvocationDocumentTests {
    @Test(arguments: [0.0, 3.5, 0.1, 12.0])
    func theLedgerRecordIsTheCodableText(price: Double) throws {
        var started = Invocation(
            id: "inv-1", resource: "coffee-3f", operation: "turn_on", caller: "alice", price: price, state: .running,
            startedAt: "2026-12-07T10:00:00.000Z", traceId: String(repeating: "a", count: 32),
            traceparent: "00-\(String(repeating: "a", count: 32))-\(String(repeating: "b", count: 16))-01", node: "node-1")
        #expect(started.document == JSONCoding.encode(started))
        started.parent = "inv-0"
        let finished = started.finished(.failed, httpStatus: 502, reason: "UpstreamError", message: "bad \"gateway\"\n", at: "2026-12-07T10:00:01.000Z")
        #expect(finished.document == JSONCoding.encode(finished))
        #expect(try JSONDecoder().decode(Invocation.self, from: finished.document) == finished)
    }

    @Test func theTargetIsReadFromTheStoredDocument() throws {
        let resource = ResourceTreeTests.everyField(price: 2)
        let target = try StoredResource(resource, revision: 1).invocationTarget()
        #expect(target.spec.operations == resource.spec.operations)
        #expect(target.spec.accessMode == .exclusive)
        #expect(target.status?.binding == resource.status?.binding)
        #expect(target.status?.phase == .running)
        #expect(target.status?.conditions == resource.status?.conditions)
    }
}

@Suite("Stored resources keep what they were written from")
struct StoredResourceDecodedTests {
    @Test func aWrittenRecordDecodesToItsResourceAndAChangedDocumentIsReadAgain() throws {
        let resource = ResourceTreeTests.everyField(price: 1)
        var stored = StoredResource(resource, revision: 7)
        #expect(stored.decoded == resource)
        let read = StoredResource(name: stored.name, kind: stored.kind, labels: stored.labels, revision: 7, document: stored.document)
        #expect(read.decoded == nil)
        #expect(read == stored, "equality is the record's, not the cache's")
        #expect(read.keepingDecoded(of: stored).decoded == resource)

        var other = resource
        other.metadata.name = "lamp-2"
        stored.document = StoredResource(other, revision: 7).document
        #expect(stored.decoded == nil)
        #expect(try stored.decode().name == "lamp-2")
        #expect(stored.keepingDecoded(of: StoredResource(resource, revision: 7)).decoded == nil, "another document keeps nothing")
    }
}
