import Foundation
import Hummingbird
import NIOCore
import TriadCore

/// Reading request bodies and headers the same way on every route.
struct RequestReader: Sendable {
    let maxBodyBytes: Int

    enum BodyKind { case document, mergePatch }

    /// The body as a JSON tree, after checking its media type and size.
    func tree(_ request: Request, kind: BodyKind) async throws -> JSONValue {
        let format = try mediaFormat(request, kind: kind)
        let data = try await body(request)
        if data.isEmpty { throw Problem.badRequest("the request body is empty") }
        do {
            return try DocumentReader.read(data, format: format)
        } catch {
            throw Problem.badRequest(error.message)
        }
    }

    func body(_ request: Request) async throws -> Data {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > maxBodyBytes {
            throw Problem.tooLarge(limit: maxBodyBytes)
        }
        var request = request
        do {
            let buffer = try await request.collectBody(upTo: maxBodyBytes)
            return Data(buffer.readableBytesView)
        } catch is NIOTooManyBytesError {
            throw Problem.tooLarge(limit: maxBodyBytes)
        }
    }

    private func mediaFormat(_ request: Request, kind: BodyKind) throws -> DocumentReader.Format {
        let raw = request.headers[.contentType] ?? ""
        let media = Self.mediaType(raw)
        switch (kind, media) {
        case (.document, "application/json"), (.mergePatch, "application/merge-patch+json"), (.mergePatch, "application/json"):
            return .json
        case (.document, "application/yaml"), (.document, "application/x-yaml"), (.document, "text/yaml"):
            return .yaml
        case (.document, ""):
            throw Problem.unsupportedMediaType("set Content-Type to application/json or application/yaml")
        case (.mergePatch, _):
            throw Problem.unsupportedMediaType("PATCH takes application/merge-patch+json, not \(media.isEmpty ? "no Content-Type" : media)")
        default:
            throw Problem.unsupportedMediaType("\(media) is not accepted; use application/json or application/yaml")
        }
    }

    /// A Content-Type's media type: parameters dropped, trimmed, lower-cased (by hand: this runs
    /// on every write, and Foundation's trimming showed in its profile).
    static func mediaType(_ contentType: String) -> String {
        let isBlank = { (b: UInt8) in b == 0x20 || b == 0x09 }
        var bytes = contentType.utf8.prefix { $0 != UInt8(ascii: ";") }.drop(while: isBlank)
        while let last = bytes.last, isBlank(last) { bytes = bytes.dropLast() }
        return String(decoding: bytes.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, as: UTF8.self)
    }

    /// A body's `metadata.resourceVersion`, when it has one (documents the model does not decode:
    /// status writes, projects).
    func bodyVersion(_ tree: JSONValue) throws -> String? {
        guard let version = tree["metadata"]?["resourceVersion"] else { return nil }
        guard case .string(let s) = version else {
            throw Problem.invalid([Violation(pointer: "/metadata/resourceVersion", message: "must be a string")])
        }
        return s
    }

    /// `If-Match` wins over `metadata.resourceVersion`; either makes the write conditional.
    func precondition(_ request: Request, bodyVersion: String?) throws -> VersionPrecondition? {
        if let ifMatch = request.headers[.ifMatch] {
            let value = ifMatch.trimmingCharacters(in: .whitespaces)
            if value == "*" { return VersionPrecondition(source: .ifMatch, version: nil) }
            var tag = value.hasPrefix("W/") ? String(value.dropFirst(2)) : value
            guard tag.count >= 2, tag.hasPrefix("\""), tag.hasSuffix("\"") else {
                throw Problem.badRequest("If-Match must be a quoted entity tag such as \"42\"")
            }
            tag = String(tag.dropFirst().dropLast())
            return VersionPrecondition(source: .ifMatch, version: tag)
        }
        return bodyVersion.map { VersionPrecondition(source: .resourceVersion, version: $0) }
    }
}

extension Response {
    static func json(_ status: HTTPResponse.Status = .ok, _ data: Data, headers: HTTPFields = [:]) -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// A resource document with its ETag.
    static func resource(_ record: StoredResource, status: HTTPResponse.Status = .ok, location: Bool = false) -> Response {
        var headers: HTTPFields = [.eTag: "\"\(record.revision)\""]
        if location { headers[.location] = "/api/v1/resources/\(record.name)" }
        return .json(status, record.document, headers: headers)
    }
}

extension Parameters {
    /// A path parameter that must be a resource-style name.
    func name(_ key: String = "name") throws -> String {
        let value = try require(key)
        guard ResourceValidator.isValidName(value) else {
            throw Problem.notFound("\"\(value)\" is not a valid name, so no such resource exists")
        }
        return value
    }
}
