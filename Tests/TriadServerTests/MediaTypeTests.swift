import Testing

@testable import TriadServer

@Suite("Content-Type media types")
struct MediaTypeTests {
    @Test(arguments: [
        ("application/json", "application/json"),
        (" Application/JSON ; charset=utf-8", "application/json"),
        ("\tapplication/yaml\t", "application/yaml"),
        ("application/merge-patch+json;", "application/merge-patch+json"),
        ("", ""),
        ("; charset=utf-8", ""),
    ])
    func parametersAndBlanksGoAndCaseFolds(raw: String, media: String) {
        #expect(RequestReader.mediaType(raw) == media)
    }
}
