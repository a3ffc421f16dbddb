import Foundation
import Hummingbird
import TriadCore

/// An RFC 9457 problem: every error the API returns. Messages are written for the caller and
/// never carry a stack trace, a decoder's path or data the caller may not read.
public struct Problem: Error, HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    /// The last segment of the stable `type` URI, e.g. `not-found`.
    public var slug: String
    public var title: String
    public var detail: String?
    public var errors: [Violation] = []
    public var currentResourceVersion: String?
    public var headers: HTTPFields = [:]
    /// Members beyond RFC 9457's own (e.g. the `invocation` a failed call was recorded as).
    public var extensions: [String: JSONValue] = [:]

    public static let typeBase = "https://triad.io/problems/"

    public init(_ status: HTTPResponse.Status, _ slug: String, _ title: String, detail: String? = nil) {
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var body: [String: JSONValue] = [
            "type": .string(Self.typeBase + slug),
            "title": .string(title),
            "status": .number(Double(status.code)),
            "instance": .string(request.uri.path),
        ]
        if let detail { body["detail"] = .string(detail) }
        if !errors.isEmpty {
            body["errors"] = .array(errors.map { .object(["pointer": .string($0.pointer), "message": .string($0.message)]) })
        }
        if let currentResourceVersion { body["currentResourceVersion"] = .string(currentResourceVersion) }
        for (key, value) in extensions where body[key] == nil { body[key] = value }
        var headers = self.headers
        headers[.contentType] = "application/problem+json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: JSONCoding.encode(JSONValue.object(body)))))
    }

    // MARK: the problems the API uses

    public static func badRequest(_ detail: String) -> Problem { Problem(.badRequest, "bad-request", "Bad request", detail: detail) }
    public static func unauthorized(_ detail: String) -> Problem {
        var p = Problem(.unauthorized, "unauthorized", "Authentication required", detail: detail)
        p.headers[.wwwAuthenticate] = "Bearer realm=\"triad\""
        return p
    }
    public static func forbidden(_ detail: String) -> Problem { Problem(.forbidden, "forbidden", "Forbidden", detail: detail) }
    public static func notFound(_ detail: String) -> Problem { Problem(.notFound, "not-found", "Not found", detail: detail) }
    public static func unsupportedMediaType(_ detail: String) -> Problem {
        Problem(.unsupportedMediaType, "unsupported-media-type", "Unsupported media type", detail: detail)
    }
    public static func tooLarge(limit: Int) -> Problem {
        Problem(.contentTooLarge, "payload-too-large", "Request body too large", detail: "the body is larger than the limit of \(limit) bytes")
    }
    public static func invalid(_ violations: [Violation], what: String = "document") -> Problem {
        var p = Problem(
            .unprocessableContent, "invalid-document", "Invalid \(what)",
            detail: violations.count == 1
                ? violations[0].description
                : "\(violations.count) problems: " + violations.prefix(3).map(\.description).joined(separator: "; ") + (violations.count > 3 ? "; …" : ""))
        p.errors = violations
        return p
    }
    public static func gone(_ detail: String) -> Problem { Problem(.gone, "resume-point-expired", "Resume point expired", detail: detail) }
    public static func internalError() -> Problem {
        Problem(.internalServerError, "internal", "Internal server error", detail: "the server could not complete the request; it has been logged")
    }
    public static func unavailable(_ detail: String) -> Problem {
        Problem(.serviceUnavailable, "unavailable", "Service unavailable", detail: detail)
    }

    /// The API's answer to a registry error.
    public static func from(_ error: RegistryError) -> Problem {
        switch error {
        case .notFound(let name):
            return .notFound("resource \"\(name)\" does not exist")
        case .alreadyExists(let name):
            return Problem(.conflict, "already-exists", "Already exists", detail: "resource \"\(name)\" already exists")
        case .conflict(let current, let detail):
            var p = Problem(.conflict, "conflict", "Conflict", detail: detail)
            p.currentResourceVersion = current
            if let current { p.headers[.eTag] = "\"\(current)\"" }
            return p
        case .preconditionFailed(let current):
            var p = Problem(
                .preconditionFailed, "precondition-failed", "Precondition failed",
                detail: current.map { "If-Match does not match the current version \($0)" } ?? "the resource does not exist")
            p.currentResourceVersion = current
            if let current { p.headers[.eTag] = "\"\(current)\"" }
            return p
        case .invalid(let violations):
            return .invalid(violations)
        case .tokenExists(let name):
            return Problem(.conflict, "already-exists", "Already exists", detail: "token \"\(name)\" already exists")
        case .unavailable(let message):
            return .unavailable(message)
        case .bindingConflict(let message):
            return Problem(.conflict, "binding-conflict", "Binding conflict", detail: message)
        case .forbidden(let message):
            return .forbidden(message)
        }
    }
}
