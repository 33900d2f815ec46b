import Crypto
import FlightRecorderCore
import HTTPTypes
public import Hummingbird

/// The web run view under `/ui/`, on the API listener. Every page is the same HTML shell;
/// `app.js` reads the path and asks the JSON API (`RunViewAPI`, `QueryAPI`) for the data with
/// the tab's bearer token, so tenancy and roles are exactly the API's. The assets are compiled
/// into the binary (`WebAssets`, generated from `assets/` by `embed-assets.py`).
///
/// Every response carries a strict Content-Security-Policy (`default-src 'self'`, no inline
/// script or style, no framing), `nosniff` and no referrer; assets are revalidated by ETag.
public struct WebUI: Sendable {
    struct Asset: Sendable {
        var type: String
        var body: ByteBuffer
        var etag: String
    }

    static let assets: [String: Asset] = Dictionary(
        uniqueKeysWithValues: WebAssets.files.map { f in
            let digest = SHA256.hash(data: Array(f.text.utf8))
            let etag = "\"" + Hex.encode(Array(digest).prefix(12)) + "\""
            return (f.name, Asset(type: f.type, body: ByteBuffer(string: f.text), etag: etag))
        })

    public static let contentSecurityPolicy =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    public init() {}

    public func addRoutes(to router: Router<some RequestContext>) {
        for path in ["/ui"] {  // also answers /ui/
            router.get(RouterPath(path)) { _, _ in
                var r = Self.secured(Response(status: .seeOther))
                r.headers[.location] = "/ui/runs"
                return r
            }
        }
        for path in ["/ui/runs", "/ui/runs/:runID", "/ui/lookup", "/ui/signin"] {
            router.get(RouterPath(path)) { request, _ in Self.serve("index.html", request) }
        }
        router.get("/ui/assets/:name") { request, context in
            Self.serve(context.parameters.get("name") ?? "", request)
        }
    }

    static func serve(_ name: String, _ request: Request) -> Response {
        guard let asset = assets[name] else {
            var r = Response(status: .notFound, body: ResponseBody(byteBuffer: ByteBuffer(string: "not found\n")))
            r.headers[.contentType] = "text/plain; charset=utf-8"
            return secured(r)
        }
        if request.headers[.ifNoneMatch] == asset.etag {
            var r = secured(Response(status: .notModified))
            r.headers[.eTag] = asset.etag
            return r
        }
        var r = secured(Response(status: .ok, body: ResponseBody(byteBuffer: asset.body)))
        r.headers[.contentType] = asset.type
        r.headers[.eTag] = asset.etag
        return r
    }

    static func secured(_ response: Response) -> Response {
        var r = response
        r.headers[.contentSecurityPolicy] = contentSecurityPolicy
        r.headers[.xContentTypeOptions] = "nosniff"
        r.headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        r.headers[.cacheControl] = "no-cache"
        r.headers[HTTPField.Name("Cross-Origin-Opener-Policy")!] = "same-origin"
        return r
    }
}
