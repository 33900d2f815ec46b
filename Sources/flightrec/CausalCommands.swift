import ArgumentParser
import FlightRecorderCollector
import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderStorage
import Foundation

extension StepNode {
    /// `name (duration) key=value …` with the facts in a fixed, readable order.
    var line: String {
        var parts = [name, "(\(Format.duration(nanos: durationNanos)))"]
        let f = facts
        let order: [(String?, String)] = [
            (f.status == "UNSET" ? nil : f.status, "status"), (f.error.map { "\"\($0.prefix(80))\"" }, ""),
            (f.model, "model"), (f.promptVersion, "prompt"), (f.tool, "tool"), (f.tier, "tier"), (f.arguments, "args"),
            (f.policyOutcome, "policy"), (f.policyRule, "rule"), (f.approvalTicket, "ticket"), (f.approver, "approver"),
            (f.idempotencyKey, "idempotency"), (f.operationId, "operation"), (f.ticketId, "ticket_id"),
        ]
        for case (let value?, let label) in order {
            parts.append(label.isEmpty ? value : "\(label)=\(value.prefix(120))")
        }
        parts.append("at \(Format.time(nanos: Int64(startTimeUnixNano) ?? 0))")
        if let shift = skewShiftNanos {
            parts.append("[clock skew corrected by \(Format.duration(nanos: abs(shift)))]")
        }
        return parts.joined(separator: " ")
    }
}

/// Causal paths as indented text.
enum PathPrinter {
    static func render(_ steps: [RunGraph.PathStep], indent: String = "") -> String {
        var out = ""
        for s in steps {
            let pad = indent + String(repeating: "  ", count: s.depth)
            let marker = s.role == "target" ? "▶ " : s.role == "preceding" ? "· " : "└ "
            out += pad + marker + s.node.line + "\n"
            for l in s.linked {
                let how = l.relation == "links_to" ? "links to" : "linked by"
                out += pad + "    ↳ \(how): " + l.node.line + "\n"
                if !l.path.isEmpty {
                    out += pad + "      its causal path:\n" + render(l.path, indent: pad + "        ")
                }
            }
        }
        return out
    }
}

struct Why: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The causal path to one step: what happened first, and what caused it.",
        discussion: """
            Give a run and a span, or start from a side effect with --operation-id, --ticket-id,
            --idempotency-key (or --key K --value V for any indexed key). Legend: └ the chain
            from the root, · earlier steps that completed first, ▶ the step asked about,
            ↳ linked steps (approvals, the policy check an approval answers).
            """)

    @OptionGroup var options: APIOptions

    @Argument(help: "Run ID.") var runID: String?
    @Argument(help: "Span ID (16 hex characters).") var spanID: String?
    @Option(name: .customLong("operation-id"), help: "Start from this operation.id.") var operationID: String?
    @Option(name: .customLong("ticket-id"), help: "Start from this ticket.id.") var ticketID: String?
    @Option(name: .customLong("idempotency-key"), help: "Start from this idempotency.key.") var idempotencyKey: String?
    @Option(help: "Start from any indexed key (with --value).") var key: String?
    @Option(help: "The value for --key.") var value: String?

    func run() async throws {
        let external: (String, String)? =
            operationID.map { ("operation.id", $0) } ?? ticketID.map { ("ticket.id", $0) }
            ?? idempotencyKey.map { ("idempotency.key", $0) } ?? key.flatMap { k in value.map { (k, $0) } }
        if let (k, v) = external {
            let data = try await fetch(options, "/api/v1/lookup?key=\(pathSegment(k))&value=\(pathSegment(v))")
            if options.json { return printBody(data) }
            let body = try JSONDecoder().decode(LookupBody.self, from: data)
            for m in body.matches {
                print("\(k)=\(v): span \(m.spanId) in run \(m.runId) (tenant \(m.tenant))")
                print(PathPrinter.render(m.path.steps), terminator: "")
            }
            return
        }
        guard let runID, let spanID else {
            throw ValidationError("give RUN_ID SPAN_ID, or --operation-id / --ticket-id / --idempotency-key")
        }
        let data = try await fetch(options, "/api/v1/runs/\(pathSegment(runID))/path?to=\(pathSegment(spanID))")
        if options.json { return printBody(data) }
        let path = try JSONDecoder().decode(RunGraph.PathView.self, from: data)
        print("run \(path.runId): causal path to \(path.target)")
        print(PathPrinter.render(path.steps), terminator: "")
    }
}

struct Find: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find runs where a span matches an expression.",
        discussion: """
            Example: flightrec find 'gen_ai.tool.name = "disable_managed_device" and policy.outcome = "blocked"'
            Fields: attribute keys, resource.<key>, name, status, duration, start, tenant, agent.version.
            Operators: = != < <= > >= ~ (contains), exists; and, or, not, parentheses.
            """)

    @OptionGroup var options: APIOptions
    @Argument(help: "The filter expression.") var expression: String
    @Option(help: "Only runs that started at or after this.") var since: String?
    @Option(help: "Only runs that started before this.") var until: String?
    @Option(help: "At most this many runs (1-10000).") var limit = 50

    func run() async throws {
        var query = ["limit=\(limit)", "where=\(pathSegment(expression))"]
        if let since { query.append("since=\(pathSegment(since))") }
        if let until { query.append("until=\(pathSegment(until))") }
        let data = try await fetch(options, "/api/v1/runs?" + query.joined(separator: "&"))
        if options.json { return printBody(data) }
        let page = try JSONDecoder().decode(SearchBody.self, from: data)
        for (run, match) in zip(page.runs, page.matches) {
            print(
                "run \(run.runID)  tenant=\(run.tenant ?? "-") start=\(Format.time(nanos: run.startNanos)) spans=\(run.spanCount)"
            )
            for s in match.spans { print("  " + RunTreePrinter.line(s, missingParent: false) + "  [\(s.spanID.hex)]") }
        }
        print(
            "\(page.runs.count) matching run(s)"
                + (page.complete
                    ? "" : "; more may match (raise --limit, narrow with --since/--until or an indexed key)"))
    }
}

struct Findings: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Safety findings in one run.")
    @OptionGroup var options: APIOptions
    @Argument(help: "Run ID.") var runID: String

    func run() async throws {
        let data = try await fetch(options, "/api/v1/runs/\(pathSegment(runID))/findings")
        if options.json { return printBody(data) }
        print(Self.render(try JSONDecoder().decode(FindingsBody.self, from: data)), terminator: "")
    }

    static func render(_ body: FindingsBody) -> String {
        if body.findings.isEmpty { return "findings: none\n" }
        var out = "findings (\(body.findings.count)):\n"
        for f in body.findings {
            out += "  [\(f.severity)] \(f.kind): \(f.message)  spans \(f.spanIds.joined(separator: ","))\n"
        }
        return out
    }
}

struct CriticalPath: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "critical-path", abstract: "The latency-critical path of a run (Jaeger's semantics).")
    @OptionGroup var options: APIOptions
    @Argument(help: "Run ID.") var runID: String

    func run() async throws {
        let data = try await fetch(options, "/api/v1/runs/\(pathSegment(runID))/critical-path")
        if options.json { return printBody(data) }
        let body = try JSONDecoder().decode(RunGraph.CriticalPathView.self, from: data)
        for (i, path) in body.paths.enumerated() {
            let total = path.reduce(0) { $0 + $1.durationNanos }
            print("trace root \(i + 1): \(Format.duration(nanos: total)) on the critical path")
            for s in path {
                print(
                    "  \(Format.time(nanos: Int64(s.startTimeUnixNano) ?? 0))  \(Format.duration(nanos: s.durationNanos))  \(s.name) [\(s.spanId)]"
                )
            }
        }
    }
}

struct Graph: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A run's causal graph: nodes and child_of, precedes, linked and member edges.")
    @OptionGroup var options: APIOptions
    @Argument(help: "Run ID.") var runID: String

    func run() async throws {
        let data = try await fetch(options, "/api/v1/runs/\(pathSegment(runID))/graph")
        if options.json { return printBody(data) }
        let body = try JSONDecoder().decode(RunGraph.GraphView.self, from: data)
        let names = Dictionary(body.nodes.map { ($0.spanId, $0.name) }, uniquingKeysWith: { a, _ in a })
        print("run \(body.runId): \(body.nodes.count) steps, \(body.edges.count) edges")
        for n in body.nodes { print("  \(n.spanId)  \(n.line)") }
        for e in body.edges {
            print("  \(names[e.from] ?? e.from) -\(e.type)-> \(names[e.to] ?? e.to)")
        }
        for a in body.adjustments {
            print(
                "  clock skew: \(names[a.spanId] ?? a.spanId) shifted by \(Format.duration(nanos: abs(a.shiftNanos)))")
        }
        for m in body.missingParents { print("  missing parent for \(names[m] ?? m)") }
    }
}
