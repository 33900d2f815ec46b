import ArgumentParser
import FlightRecorderOTLP
import FlightRecorderStorage
import Foundation

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Print one run as an indented tree of its spans.")

    @OptionGroup var options: APIOptions

    @Argument(help: "The run ID (or a trace ID still listed under its trace).")
    var runID: String

    func run() async throws {
        let data = try await fetch(options, "/api/v1/runs/" + pathSegment(runID))
        if options.json {
            printBody(data)
            return
        }
        let body = try JSONDecoder().decode(RunView.self, from: data)
        // Findings right under the run's header line: what a responder should look at first.
        let findings = try await fetch(options, "/api/v1/runs/" + pathSegment(body.run.runID) + "/findings")
        let tree = RunTreePrinter.render(body)
        let header = tree.prefix { $0 != "\n" }
        print(header)
        print(Findings.render(try JSONDecoder().decode(Findings.Body.self, from: findings)), terminator: "")
        print(tree.dropFirst(header.count + 1), terminator: "")
    }
}

/// The parts of `GET /api/v1/runs/{id}` the tree shows.
struct RunView: Decodable {
    struct Span: Decodable {
        var traceId: String
        var spanId: String
        var parentSpanId: String?
        var name: String
        var startTimeUnixNano: String
        var durationNanos: Int64
        var attributes: [String: JSONValue]
        var status: [String: String]
    }

    var run: RunSummary
    var spans: [Span]
    var warnings: [String]
}

/// Renders a run as an indented tree: name, duration, status, and the attributes that
/// matter to a responder (tool, model, policy outcome, operation ID).
enum RunTreePrinter {
    static let keyAttributes: [(label: String, keys: [String])] = [
        ("tool", ["gen_ai.tool.name"]),
        ("model", ["gen_ai.response.model", "gen_ai.request.model"]),
        ("policy", ["policy.outcome"]),
        ("rule", ["policy.rule"]),
        ("operation", ["operation.id"]),
    ]

    static func render(_ view: RunView) -> String {
        let r = view.run
        var out = "run \(r.runID)  agent=\(r.agent ?? "-") tenant=\(r.tenant ?? "-")  "
        out += "spans=\(r.spanCount) errors=\(r.errorCount) traces=\(r.traceCount)  "
        out += "start=\(Format.time(nanos: r.startNanos)) duration=\(Format.duration(nanos: r.durationNanos))\n"
        for w in view.warnings { out += "warning: \(w)\n" }
        let ids = Set(view.spans.map { $0.traceId + $0.spanId })
        var children: [String: [RunView.Span]] = [:]
        var roots: [RunView.Span] = []
        for s in view.spans {
            if let p = s.parentSpanId, ids.contains(s.traceId + p) {
                children[s.traceId + p, default: []].append(s)
            } else {
                roots.append(s)
            }
        }
        func walk(_ s: RunView.Span, prefix: String, last: Bool, depth: Int) {
            let branch = depth == 0 ? "" : (last ? "└─ " : "├─ ")
            out += prefix + branch + line(s, missingParent: depth == 0 && s.parentSpanId != nil) + "\n"
            let kids = children[s.traceId + s.spanId] ?? []
            let nextPrefix = depth == 0 ? "" : prefix + (last ? "   " : "│  ")
            for (i, k) in kids.enumerated() {
                walk(k, prefix: depth == 0 ? "" : nextPrefix, last: i == kids.count - 1, depth: depth + 1)
            }
        }
        for root in roots { walk(root, prefix: "", last: true, depth: 0) }
        return out
    }

    static func line(_ s: RunView.Span, missingParent: Bool) -> String {
        var parts = [s.name, "(\(Format.duration(nanos: s.durationNanos)))"]
        let status = s.status["code"] ?? "UNSET"
        if status != "UNSET" { parts.append(status) }
        if status == "ERROR", let m = s.status["message"], !m.isEmpty { parts.append("\"\(m.prefix(80))\"") }
        for (label, keys) in keyAttributes {
            if let v = keys.lazy.compactMap({ s.attributes[$0] }).first { parts.append("\(label)=\(display(v))") }
        }
        if missingParent { parts.append("[parent \(s.parentSpanId ?? "") not received]") }
        return parts.joined(separator: " ")
    }

    static func display(_ v: JSONValue) -> String {
        switch v {
        case .string(let s): s
        case .int(let i): String(i)
        case .uint(let u): String(u)
        case .double(let d): String(d)
        case .bool(let b): String(b)
        default: "…"
        }
    }
}
