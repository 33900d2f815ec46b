import ArgumentParser
import FlightRecorderCollector
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
        let body = try JSONDecoder().decode(RunBody.self, from: data)
        // Findings right under the run's header line: what a responder should look at first.
        let findings = try await fetch(options, "/api/v1/runs/" + pathSegment(body.run.runID) + "/findings")
        let tree = RunTreePrinter.render(body)
        let header = tree.prefix { $0 != "\n" }
        print(header)
        print(Findings.render(try JSONDecoder().decode(FindingsBody.self, from: findings)), terminator: "")
        print(tree.dropFirst(header.count + 1), terminator: "")
    }
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

    static func render(_ view: RunBody) -> String {
        let r = view.run
        var out = "run \(r.runID)  agent=\(r.agent ?? "-") tenant=\(r.tenant ?? "-")  "
        out += "spans=\(r.spanCount) errors=\(r.errorCount) traces=\(r.traceCount)  "
        out += "start=\(Format.time(nanos: r.startNanos)) duration=\(Format.duration(nanos: r.durationNanos))\n"
        for w in view.warnings { out += "warning: \(w)\n" }
        let ids = Set(view.spans.map { $0.traceID.hex + $0.spanID.hex })
        var children: [String: [SpanRecord]] = [:]
        var roots: [SpanRecord] = []
        for s in view.spans {
            if let p = s.parentSpanID?.hex, ids.contains(s.traceID.hex + p) {
                children[s.traceID.hex + p, default: []].append(s)
            } else {
                roots.append(s)
            }
        }
        func walk(_ s: SpanRecord, prefix: String, last: Bool, depth: Int) {
            let branch = depth == 0 ? "" : (last ? "└─ " : "├─ ")
            out += prefix + branch + line(s, missingParent: depth == 0 && s.parentSpanID != nil) + "\n"
            let kids = children[s.traceID.hex + s.spanID.hex] ?? []
            let nextPrefix = depth == 0 ? "" : prefix + (last ? "   " : "│  ")
            for (i, k) in kids.enumerated() {
                walk(k, prefix: depth == 0 ? "" : nextPrefix, last: i == kids.count - 1, depth: depth + 1)
            }
        }
        for root in roots { walk(root, prefix: "", last: true, depth: 0) }
        return out
    }

    static func line(_ s: SpanRecord, missingParent: Bool) -> String {
        var parts = [s.name, "(\(Format.duration(nanos: Int64(clamping: s.durationNanos))))"]
        let status = s.statusCode.name
        if status != "UNSET" { parts.append(status) }
        if s.statusCode == .error, !s.statusMessage.isEmpty { parts.append("\"\(s.statusMessage.prefix(80))\"") }
        for (label, keys) in keyAttributes {
            if let v = keys.lazy.compactMap({ s.attributes[$0] }).first { parts.append("\(label)=\(v.displayString)") }
        }
        if missingParent { parts.append("[parent \(s.parentSpanID?.hex ?? "") not received]") }
        return parts.joined(separator: " ")
    }
}
