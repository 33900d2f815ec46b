import FlightRecorderAudit
import FlightRecorderHTTP
import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderStorage
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// `GET /api/v1/audit/export`: an audit bundle (`AuditBundle`), streamed as one tar archive.
///
/// Needs the `auditor` or `admin` role; sees only the token's tenants. Parameters: `run=ID`, or
/// `where=EXPR` (with `since`/`until` bounding the runs' start), or neither for a time range of
/// one tenant (`tenant`, `since`, optional `until`: every span logged in between, proved
/// complete); `tenant` narrows any of them; `consistency_from=SIZE` (repeatable) adds proofs
/// of consistency with checkpoints the auditor pinned. One bundle is built at a time (others 503).
extension QueryAPI {
    static let exportRunning = Mutex(false)

    func auditExport(_ request: Request, principal: Principal) async throws -> Response {
        let q = request.formQuery
        let since = try Self.timeBound(q, "since")
        let until = try Self.timeBound(q, "until")
        let run = q["run"].flatMap { $0.isEmpty ? nil : $0 }
        let expression = q["where"].flatMap { $0.isEmpty ? nil : $0 }
        guard run == nil || expression == nil else { throw APIError(.badRequest, "give run or where, not both") }
        if let run, run.utf8.count > 512 { throw APIError(.badRequest, "run: at most 512 bytes") }
        var scope = principal.scope
        var tenant = q["tenant"].flatMap { $0.isEmpty ? nil : $0 }
        if let t = tenant {
            guard scope.contains(t) else { throw APIError(.forbidden, "this token has no access to tenant \(t)") }
            scope = .only([t])
        } else if case .only(let tenants) = scope, tenants.count == 1 {
            tenant = tenants.first
        }
        var consistencyFrom: [UInt64] = []
        for value in q.values("consistency_from") {
            guard let size = UInt64(value) else {
                throw APIError(.badRequest, "consistency_from: expected a tree size")
            }
            consistencyFrom.append(size)
        }
        let selection: AuditExportRequest.Selection =
            if let run { .run(run) } else if let expression { .filter(expression) } else { .range }
        if selection == .range {
            guard tenant != nil else {
                throw APIError(.badRequest, "tenant: a time-range export (no run or where) needs one tenant")
            }
            guard since != nil else { throw APIError(.badRequest, "since: a time-range export needs since") }
        }
        var exportRequest = AuditExportRequest(
            selection: selection, since: since, until: until, scope: scope, tenant: tenant)
        exportRequest.consistencyFrom = consistencyFrom

        let acquired = Self.exportRunning.withLock { running in
            if running { return false }
            running = true
            return true
        }
        guard acquired else {
            throw APIError(.serviceUnavailable, "another audit bundle is being built; try again when it is done")
        }
        let directory = store.configuration.directory + "/tmp/audit-\(UUID().uuidString.lowercased())"
        let bundle: StartedBundle
        do {
            Self.removeStaleExports(store.configuration.directory + "/tmp")
            bundle = try await AuditExporter.start(
                store: store, request: exportRequest, redactionPolicyDigest: policy.redactionDigest,
                directory: directory)
        } catch {
            Self.exportRunning.withLock { $0 = false }
            if let error = error as? AuditExportError {
                switch error.kind {
                case .badRequest: throw APIError(.badRequest, error.description)
                case .notFound: throw APIError(.notFound, error.description)
                case .unavailable: throw APIError(.serviceUnavailable, error.description)
                }
            }
            throw error
        }
        // One bundle built at a time: the next may start once this one is finished, whether or
        // not its response is still being sent (or was never started).
        let finished = bundle.finished
        Task {
            _ = await finished.result
            Self.exportRunning.withLock { $0 = false }
        }
        // The spans' files go out while the rest of the bundle is derived and signed, so the
        // length is not known up front: the response is chunked, and a bundle that fails to
        // finish ends it early (the client then has no end-of-archive, and says so).
        let name = "flightrec-audit-\(Int(Date().timeIntervalSince1970)).tar"
        var headers = HTTPFields()
        headers[.contentType] = "application/x-tar"
        headers[.contentDisposition] = "attachment; filename=\"\(name)\""
        let (logger, principalName) = (self.logger, principal.name)
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                defer { bundle.head.remove() }
                do {
                    let whole = try await bundle.forEachChunk { try await writer.write($0) }
                    try await writer.finish(nil)
                    // Which runs left in which bundle: an erasure's receipt names the bundles
                    // exported before it that held its runs.
                    store.erasures.noteExport(
                        id: whole.id, tenants: whole.tenants, runDigests: whole.runDigests,
                        at: Int64(Date().timeIntervalSince1970))
                    logger.info(
                        "audit bundle exported",
                        metadata: [
                            "principal": "\(principalName)", "selection": "\(whole.spans) spans, \(whole.runs) runs",
                            "bytes": "\(whole.archiveSize)",
                        ])
                } catch {
                    logger.warning("audit bundle: the response ended early", metadata: ["error": "\(error)"])
                    throw error
                }
            })
    }

    /// Bundles a crash left behind (older than a day).
    static func removeStaleExports(_ directory: String) {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: directory) else { return }
        for name in names where name.hasPrefix("audit-") {
            let path = directory + "/" + name
            if let date = (try? fm.attributesOfItem(atPath: path))?[.modificationDate] as? Date,
                date.timeIntervalSinceNow < -86_400
            {
                try? fm.removeItem(atPath: path)
            }
        }
    }
}
