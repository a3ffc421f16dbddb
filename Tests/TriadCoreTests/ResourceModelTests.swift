import Foundation
import Testing

@testable import TriadCore

@Suite("Resource model")
struct ResourceModelTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func files(_ folder: String) -> [String] {
        let dir = fixtures.appendingPathComponent(folder)
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [])
            .filter { $0.hasSuffix(".json") && $0 != "expected.json" }.sorted().map { dir.appendingPathComponent($0).path }
    }

    /// The schema (judged by Python's jsonschema) and the Swift validator agree on every example,
    /// and on where the invalid ones go wrong.
    @Test func schemaAndValidatorJudgeTheSame() throws {
        let all = Self.files("valid") + Self.files("invalid")
        #expect(all.count >= 20)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.repositoryRoot.appendingPathComponent("scripts/check_resource_schema.py").path] + all
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let verdicts = String(decoding: output, as: UTF8.self).split(separator: "\n").compactMap { try? JSONCoding.parse(Data($0.utf8)) }
        #expect(verdicts.count == all.count)
        let expected = try JSONCoding.parse(Data(contentsOf: Self.fixtures.appendingPathComponent("invalid/expected.json")))
        for verdict in verdicts {
            let file = try #require(verdict["file"]?.stringValue)
            let tree = try JSONCoding.parse(Data(contentsOf: URL(fileURLWithPath: file)))
            let violations = ResourceValidator.validate(tree)
            let schemaValid = verdict["valid"] == .bool(true)
            #expect(violations.isEmpty == schemaValid, "\(file): schema says \(schemaValid), Swift says \(violations)")
            let name = URL(fileURLWithPath: file).lastPathComponent
            if let pointer = expected[name]?.stringValue {
                #expect(violations.map(\.pointer) == [pointer], "\(name)")
                #expect(verdict["errors"]?.arrayValue?.first?.stringValue?.hasPrefix(pointer + ":") == true, "\(name): schema pointer")
            } else {
                #expect(file.contains("/valid/"), "\(name) has no expected pointer")
            }
            if violations.isEmpty {
                // Valid documents decode and round-trip through JSON and YAML unchanged.
                let resource = try Resource(validated: tree)
                #expect(try Resource(validated: resource.jsonTree) == resource)
                let yaml = DocumentWriter.yaml(tree)
                #expect(try DocumentReader.read(Data(yaml.utf8), format: .yaml) == tree, "\(name) YAML round-trip")
            }
        }
    }

    /// The operation URL syntax, byte by byte as the schema's pattern reads it, and a port the
    /// HTTP client can take.
    @Test(arguments: [
        ("http://127.0.0.1:9101/operations/brew", true), ("https://example.com", true), ("http://[::1]:8080/x", true),
        ("http://user@host:1/", true), ("http://host:65535?q=1", true), ("http://hôst/ä", true),
        ("http://host:65536", false), ("http://host:0", false), ("http://host:", false), ("http://host:8a", false),
        ("http://:80/", false), ("http://[]:80", false), ("http://", false), ("ftp://host", false),
        ("http://host/a b", false), ("http://host/\u{1C}", false), ("http://host/\u{7F}", false), ("http://hôst/\u{2003}", false),
    ])
    func operationURLs(_ url: String, _ valid: Bool) {
        #expect(Syntax.isHTTPURL(url) == valid)
    }

    @Test func nameSyntaxes() {
        for (name, valid) in [("a", true), ("a--b", true), ("0", true), ("a-", false), ("-a", false), ("", false), ("A", false), ("a.b", false)] {
            #expect(Syntax.isDNSLabel(name) == valid, "\(name)")
        }
        for (value, valid) in [("", true), ("A.b_c-D", true), ("x", true), ("_a", false), ("a.", false), ("a/b", false)] {
            #expect(Syntax.isLabelValue(value) == valid, "\(value)")
        }
        for (key, valid) in [("triad.io/space", true), ("space", true), ("a/b/c", false), ("Triad.io/space", false), ("triad.io/", false)] {
            #expect(Syntax.isQualifiedKey(key) == valid, "\(key)")
        }
    }

    /// The README's example documents stay valid.
    @Test func examplesAreValid() throws {
        let dir = Self.repositoryRoot.appendingPathComponent("examples")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") }
        #expect(!files.isEmpty)
        for file in files {
            let docs = try DocumentReader.readAll(Data(contentsOf: dir.appendingPathComponent(file)), format: .yaml)
            #expect(docs.count == 3)
            for doc in docs { #expect(ResourceValidator.validate(doc).isEmpty, "\(file)") }
        }
    }

    @Test func everyViolationIsReported() {
        let tree: JSONValue = .object([
            "apiVersion": .string("v2"), "kind": .string("Resource"),
            "metadata": .object(["name": .string("Bad_Name"), "labels": .object(["ok": .number(1)])]),
            "spec": .object([
                "kind": .string("Robot"),
                "operations": .array([
                    .object(["name": .string("brew"), "httpAction": .object(["action": .string("FETCH"), "url": .string("nope")])]),
                    .object(["name": .string("brew"), "price": .number(-1), "httpAction": .object(["action": .string("GET"), "url": .string("http://x")])]),
                ]),
            ]),
        ])
        let pointers = ResourceValidator.validate(tree).map(\.pointer)
        #expect(
            pointers == [
                "/apiVersion", "/metadata/name", "/metadata/labels/ok", "/spec/kind",
                "/spec/operations/0/httpAction/action", "/spec/operations/0/httpAction/url",
                "/spec/operations/1/name", "/spec/operations/1/price",
            ])
    }

    @Test func yamlIsReadWithoutSurprises() throws {
        let yaml = """
            apiVersion: triad.io/v1alpha1
            kind: Resource
            metadata: {name: fan, labels: {floor: "3", on: "yes"}}
            spec:
              kind: Device
              aliasName: 2026-11-25T10:00:00Z
              probeEnabled: true
              operations:
                - {name: speed, price: 2, httpAction: {action: PUT, url: "http://127.0.0.1:9/speed"}}
            ---
            apiVersion: triad.io/v1alpha1
            kind: Resource
            metadata: {name: alice}
            spec: {kind: Person}
            """
        let docs = try DocumentReader.readAll(Data(yaml.utf8), format: .yaml)
        #expect(docs.count == 2)
        #expect(docs[0]["spec"]?["aliasName"] == .string("2026-11-25T10:00:00Z"), "timestamps stay strings")
        #expect(docs[0]["spec"]?["probeEnabled"] == .bool(true))
        #expect(docs[0]["spec"]?["operations"]?.arrayValue?.first?["price"] == .number(2))
        #expect(ResourceValidator.validate(docs[0]).isEmpty)
        #expect(throws: DocumentSyntaxError.self) { try DocumentReader.readAll(Data("a: [1\n".utf8), format: .yaml) }
        #expect(throws: DocumentSyntaxError.self) { try DocumentReader.readAll(Data("a: 1\na: 2\n".utf8), format: .yaml) }
        // `&` and `*` inside scalars are text, not anchors.
        #expect(
            try DocumentReader.read(Data("a: R&D *stars* &co\nb: \"&x\"\nc: |\n  *y\n".utf8), format: .yaml)
                == .object(["a": .string("R&D *stars* &co"), "b": .string("&x"), "c": .string("*y\n")]))
        // YAML 1.1 base-60 integers are summed with overflow checks: past Int's range is an error, not a trap.
        #expect(
            try DocumentReader.read(Data("a: 1:30\nb: -2:00:01\nc: 0x1F\n".utf8), format: .yaml)
                == .object(["a": .number(90), "b": .number(-7201), "c": .number(31)]))
        #expect(throws: DocumentSyntaxError.self) { try DocumentReader.read(Data("a: 9000000000000000000:0\n".utf8), format: .yaml) }
        #expect(DocumentReader.sniff(Data("  {\"a\":1}".utf8)) == .json)
        #expect(DocumentReader.sniff(Data("a: 1".utf8)) == .yaml)
    }

    @Test func labelSelectors() throws {
        let labels = ["triad.io/space": "pantry-3f", "tier": "gold"]
        let cases: [(String, Bool)] = [
            ("", true), ("triad.io/space=pantry-3f", true), ("triad.io/space==pantry-3f", true), ("triad.io/space!=pantry-3f", false),
            ("tier in (gold,silver)", true), ("tier notin (gold)", false), ("missing notin (x)", true), ("tier", true),
            ("!tier", false), ("!missing", true), ("tier=gold,triad.io/space in (lab)", false), ("tier in ( gold , x )", true),
        ]
        for (text, expected) in cases {
            #expect(try LabelSelector(parsing: text).matches(labels) == expected, "\(text)")
        }
        for bad in ["a in (b", "=x", "a b", ",", "a=b=c", "bad key!=x", "a in (b c)"] {
            #expect(throws: LabelSelector.ParseError.self, "\(bad)") { try LabelSelector(parsing: bad) }
        }
    }

    @Test func mergePatch() {
        let target: JSONValue = .object(["a": .string("b"), "c": .object(["d": .string("e"), "f": .string("g")])])
        let patch: JSONValue = .object(["a": .string("z"), "c": .object(["f": .null])])
        #expect(MergePatch.apply(patch, to: target) == .object(["a": .string("z"), "c": .object(["d": .string("e")])]))
        #expect(MergePatch.apply(.array([.number(1)]), to: target) == .array([.number(1)]))
    }

    @Test func timestamps() {
        for good in ["2026-11-25T10:00:00Z", "2026-11-25T10:00:00.123Z", "2026-11-25t10:00:00+01:00", "2024-02-29T00:00:00Z"] {
            #expect(Timestamp.isRFC3339(good), "\(good)")
        }
        for bad in ["yesterday", "2026-11-25", "2026-11-25 10:00:00Z", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-25T10:00:00"] {
            #expect(!Timestamp.isRFC3339(bad), "\(bad)")
        }
        let now = Date(timeIntervalSince1970: 1_764_064_800.25)
        #expect(Timestamp.isRFC3339(Timestamp.format(now)))
        #expect(abs(Timestamp.parse(Timestamp.format(now))!.timeIntervalSince(now)) < 0.001)
    }

    @Test func accessPolicy() {
        let device = Principal(name: "p", role: .device, resource: "fan")
        #expect(device.may(.writeStatus(resource: "fan")))
        #expect(!device.may(.writeStatus(resource: "lamp")))
        #expect(!device.may(.readResources))
        #expect(device.mayRead(resource: "fan") && !device.mayRead(resource: "lamp"))
        let app = Principal(name: "a", role: .app)
        #expect(app.may(.readResources) && !app.may(.writeResources) && app.may(.readEvents))
        #expect(device.may(.readEvents), "a device watches its own resource (the stream filters)")
        let integrator = Principal(name: "i", role: .integrator)
        #expect(integrator.may(.readEvents) && !integrator.may(.writeStatus(resource: "fan")))
        let op = Principal(name: "o", role: .operator)
        #expect(op.may(.writeResources) && op.may(.writeStatus(resource: "x")) && !op.may(.manageTokens))
        #expect(Principal(name: "r", role: .admin).may(.manageTokens))
    }

    @Test func cloudEventRendering() throws {
        let event = RegistryEvent(
            id: 42, type: .status, name: "fan", kind: .device, labels: [:], time: "2026-11-25T10:00:00Z",
            document: Data(#"{"metadata":{"name":"fan"}}"#.utf8))
        let ce = try JSONCoding.parse(CloudEventRenderer.render(event))
        #expect(ce["id"] == .string("42"))
        #expect(ce["type"] == .string("io.triad.resource.status"))
        #expect(ce["resourcekind"] == .string("device"))
        #expect(ce["data"]?["metadata"]?["name"] == .string("fan"))
        #expect(CloudEventRenderer.routingKey(event) == "device.fan.status")
    }

    /// A writer patches only its own condition: the others merge through untouched, so a newer
    /// heartbeat is not overwritten by the copy the writer read earlier.
    @Test func aConditionPatchCarriesOnlyItsType() throws {
        var conditions: [Condition] = []
        conditions.set(type: "AgentReady", status: .true, reason: "Heartbeat", message: nil, at: "2026-11-26T10:00:00Z")
        conditions.set(type: "ProbeReady", status: .false, reason: "ProbeStarting", message: "starting", at: "2026-11-26T10:00:01Z")
        let patch = try conditions.patch(only: "ProbeReady")
        #expect(patch.arrayValue?.count == 1)
        #expect(patch.arrayValue?.first?["type"]?.stringValue == "ProbeReady")
        #expect(patch.arrayValue?.first?["reason"]?.stringValue == "ProbeStarting")
        #expect(try conditions.patch(only: "Missing") == .array([]))
    }
}

@Suite("JSON parser")
struct JSONParserTests {
    @Test func parsesWhatJSONAllows() throws {
        let text = #"{"a": [1, -2.5e3, 0, true, false, null], "b": {"c": "x\"y\\z\/\n\u00e9\ud83d\ude00"}, "": ""}"#
        let v = try JSONCoding.parse(Data(text.utf8))
        #expect(v["a"] == .array([.number(1), .number(-2500), .number(0), .bool(true), .bool(false), .null]))
        #expect(v["b"]?["c"] == .string("x\"y\\z/\né😀"))
        #expect(v[""] == .string(""))
        // Strings without escapes, ASCII and not.
        #expect(
            try JSONCoding.parse(Data(#"["plain", "naïve café 😀", "a\u00e9"]"#.utf8)) == .array([.string("plain"), .string("naïve café 😀"), .string("aé")]))
        #expect(try JSONCoding.parse(Data(" 3 ".utf8)) == .number(3))
        // Agrees with Foundation's decoder on a real document.
        let doc = try Data(contentsOf: ResourceModelTests.fixtures.appendingPathComponent("valid/full-status.json"))
        #expect(try JSONCoding.parse(doc) == (try JSONDecoder().decode(JSONValue.self, from: doc)))
    }

    @Test func rejectsBytesThatAreNotUTF8WithOrWithoutEscapes() {
        for bytes: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0x5C, 0x6E, 0xC3, 0x22]] {
            #expect(throws: DocumentSyntaxError("body is not valid JSON: string is not valid UTF-8 at line 1, column \(bytes.count + 1)")) {
                try JSONCoding.parse(Data(bytes))
            }
        }
    }

    @Test(arguments: [
        ("{\"a\": 1,}", "line 1, column 9"),
        ("{\n  \"a\": tru\n}", "line 2, column 8"),
        ("{\"a\": 1} x", "unexpected text after the document"),
        ("{\"a\": 1, \"a\": 2}", "duplicate key \"a\""),
        ("[01]", "leading zeros"),
        ("\"\\ud800\"", "unpaired surrogate"),
        ("\"a\u{1}b\"", "control character"),
        ("{\"a\": \"b", "unterminated string"),
        ("", "unexpected end of input"),
        (String(repeating: "[", count: 200) + String(repeating: "]", count: 200), "nesting deeper than 128"),
        ("[1e999]", "number out of range"),
    ])
    func rejectsWithAPlace(_ text: String, _ expected: String) {
        do {
            _ = try JSONCoding.parse(Data(text.utf8))
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.message.hasPrefix("body is not valid JSON: "))
            #expect(error.message.contains(expected), "\(error.message)")
        }
    }
}
