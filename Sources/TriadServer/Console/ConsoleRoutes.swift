import Foundation
import Hummingbird

/// The web console: static files compiled into the executable (`Console/Assets`), served
/// without a token (they hold no data; every datum comes from the API with the signed-in
/// token) and under a strict Content-Security-Policy: scripts and styles from this origin
/// only, no inline script, no `eval`, nothing framed.
struct ConsoleRoutes {
    static let prefix = "/console/"

    /// Paths the auth middleware lets through without a token.
    static func isOpen(_ path: String) -> Bool {
        path == "/" || path == "/favicon.ico" || path == "/console" || path.hasPrefix(prefix)
    }

    static let securityHeaders: HTTPFields = [
        .init("Content-Security-Policy")!:
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            + "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        .init("X-Content-Type-Options")!: "nosniff",
        .init("Referrer-Policy")!: "no-referrer",
        .init("X-Frame-Options")!: "DENY",
        .cacheControl: "no-cache",
    ]

    struct Asset: Sendable {
        let bytes: [UInt8]
        let contentType: String
    }

    static let assets: [String: Asset] = [
        "index.html": Asset(bytes: PackageResources.index_html, contentType: "text/html; charset=utf-8"),
        "console.css": Asset(bytes: PackageResources.console_css, contentType: "text/css; charset=utf-8"),
        "app.js": Asset(bytes: PackageResources.app_js, contentType: "text/javascript; charset=utf-8"),
        "api.js": Asset(bytes: PackageResources.api_js, contentType: "text/javascript; charset=utf-8"),
        "dom.js": Asset(bytes: PackageResources.dom_js, contentType: "text/javascript; charset=utf-8"),
        "views.js": Asset(bytes: PackageResources.views_js, contentType: "text/javascript; charset=utf-8"),
        "chart.js": Asset(bytes: PackageResources.chart_js, contentType: "text/javascript; charset=utf-8"),
        "favicon.svg": Asset(bytes: PackageResources.favicon_svg, contentType: "image/svg+xml"),
    ]

    /// Registered on the router directly: these are pages, not the API that the route table
    /// (and the OpenAPI test) describes.
    func register(_ router: Router<TriadRequestContext>) {
        router.get("/") { _, _ in Self.redirect(to: Self.prefix) }
        router.get("/console/") { _, _ in try Self.serve("index.html") }
        router.get("/console/:file") { _, context in try Self.serve(context.parameters.require("file")) }
        router.get("/favicon.ico") { _, _ in try Self.serve("favicon.svg") }
    }

    static func redirect(to location: String) -> Response {
        var headers = securityHeaders
        headers[.location] = location
        return Response(status: .found, headers: headers)
    }

    static func serve(_ file: String) throws -> Response {
        guard let asset = assets[file] else { throw Problem.notFound("the console has no file \(file)") }
        var headers = securityHeaders
        headers[.contentType] = asset.contentType
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: asset.bytes)))
    }
}
