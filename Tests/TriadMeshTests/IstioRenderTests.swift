import Foundation
import Testing
import TriadMesh
import TriadTesting
import Yams

/// `triad upgrade auth --to v2 --render istio` against a golden file. To accept a deliberate
/// change: TRIAD_UPDATE_GOLDEN=1 swift test --filter IstioRenderTests, then review the diff.
@Suite("Istio rendering")
struct IstioRenderTests {
    static let fixture = TestPaths.repositoryRoot + "/Tests/TriadMeshTests/Fixtures/istio-upgrade-auth-v1-v2.yaml"

    func golden(_ text: String) throws {
        if ProcessInfo.processInfo.environment["TRIAD_UPDATE_GOLDEN"] == "1" {
            try text.write(toFile: Self.fixture, atomically: true, encoding: .utf8)
        }
        let expected = try String(contentsOfFile: Self.fixture, encoding: .utf8)
        #expect(text == expected, "the rendering changed; rerun with TRIAD_UPDATE_GOLDEN=1 and review the diff")
    }

    @Test func cvStepsAsIstioDocumentsMatchTheGoldenFile() throws {
        let text = IstioRender.render(.init(service: "auth", from: "v1", to: "v2"))
        try golden(text)
        // Every document is YAML Kubernetes reads.
        let docs = try Array(Yams.load_all(yaml: text)).compactMap { $0 as? [String: Any] }
        #expect(
            docs.map { $0["kind"] as? String } == [
                "VirtualService", "DestinationRule", "EnvoyFilter", "EnvoyFilter",
                "DestinationRule", "VirtualService", "EnvoyFilter",
                "VirtualService", "EnvoyFilter", "VirtualService", "DestinationRule",
            ])
    }

    @Test func routeShapesFollowTheReportsFigures() throws {
        let steps = IstioRender.steps(.init(service: "auth", from: "v1", to: "v2"))
        #expect(steps.map(\.name) == ["initial", "started", "default-switched", "blocked", "locked", "retired", "cleaned"])
        func http(_ doc: IstioRender.Node) throws -> [[String: Any]] {
            let y = try #require(try Yams.load(yaml: doc.yaml) as? [String: Any])
            return try #require((y["spec"] as? [String: Any])?["http"] as? [[String: Any]])
        }
        func dest(_ route: [String: Any]) -> String? {
            (((route["route"] as? [[String: Any]])?.first?["destination"]) as? [String: Any])?["subset"] as? String
        }
        // Figure 10: all to v1. Figure 14: pins, default v1. Figure 17: default v2. Figure 22: v2 only.
        #expect(try http(steps[0].documents[0]).map(dest) == ["v1"])
        let fig14 = try http(steps[1].documents[1])
        #expect(fig14.map(dest) == ["v1", "v2", "v1"])
        #expect(fig14.map { $0["name"] as? String } == ["pin-v1", "pin-v2", "default"])
        #expect(try http(steps[2].documents[0]).map(dest) == ["v1", "v2", "v2"])
        #expect(try http(steps[6].documents[0]).map(dest) == ["v2"])
        #expect(steps[5].delete == ["Deployment/auth-v1", "EnvoyFilter/auth-v1-block"])
        let regex = try #require(((fig14[0]["match"] as? [[String: Any]])?.first?["headers"] as? [String: Any])?["x-version"] as? [String: Any])
        #expect(regex["regex"] as? String == #"(.*,)?\s*auth-v1\s*(,.*)?"#)
    }

    @Test func theCLIPrintsTheSameDocumentsWithoutAMesh() async throws {
        let dir = try TestPaths.temporaryDirectory("triad-mesh-test")
        _ = try MeshTestSupport.envoy()
        let run = try await MeshTestSupport.triad(["upgrade", "auth", "--to", "v2", "--from", "v1", "--render", "istio"], in: dir)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout == (try String(contentsOfFile: Self.fixture, encoding: .utf8)))
        let bf = try await MeshTestSupport.triad(["upgrade", "auth", "--to", "v2", "--from", "v1", "--render", "istio", "--strategy", "BF"], in: dir)
        #expect(bf.status == 1 && bf.stderr.contains("renders the CV procedure"))
        let noFrom = try await MeshTestSupport.triad(["upgrade", "auth", "--to", "v2", "--render", "istio"], in: dir)
        #expect(noFrom.status == 1 && noFrom.stderr.contains("give --from VERSION"), "\(noFrom.stderr)")
    }
}
