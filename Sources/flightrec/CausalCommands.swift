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

/// The incident card as about ten lines: one per question, each with the span it comes from.
enum CardPrinter {
    static func render(_ card: IncidentCard, target: String) -> String {
        func row(_ label: String, _ text: String?) -> String {
            label.padding(toLength: 12, withPad: " ", startingAt: 0) + (text ?? "none recorded") + "\n"
        }
        func span(_ id: String) -> String { "[\(id)]" }
        func age(_ seconds: Int64) -> String {
            seconds >= 86_400
                ? "\(seconds / 86_400)d"
                : seconds >= 3_600
                    ? "\(seconds / 3_600)h"
                    : seconds >= 60 ? "\(seconds / 60)m" : "\(seconds)s"
        }
        var out = "step \(card.target)  \(target)\n"
        out += row(
            "proposed by",
            card.proposedBy.map { p in
                [
                    p.name, p.model.map { "model=\($0)" }, p.promptVersion.map { "prompt=\($0)" },
                    p.agentVersion.map { "agent_version=\($0)" }, span(p.spanId),
                ].compactMap { $0 }.joined(separator: " ")
            })
        out += row(
            "entity",
            card.entityResolution.map { e in
                var parts = [e.tool]
                if let a = e.arguments { parts.append("args=\(a.prefix(100))") }
                if let r = e.resolution {
                    parts.append(r == "ambiguous" ? "AMBIGUOUS (\(e.matchCount ?? 0) matches)" : r)
                }
                parts.append("shared=\(e.sharedValues.joined(separator: ","))")
                return (parts + [span(e.spanId)]).joined(separator: " ")
            })
        out += row(
            "context",
            card.context.isEmpty
                ? nil
                : card.context.map { c in
                    [
                        c.name, c.source.map { "source=\($0)" },
                        c.ageSeconds.map { "age=" + age($0) },
                        span(c.spanId),
                    ].compactMap { $0 }.joined(separator: " ")
                }.joined(separator: "; "))
        out += row(
            "policy",
            card.policy.map { p in
                [
                    p.outcome, p.rule.map { "rule=\($0)" }, p.tool.map { "tool=\($0)" },
                    p.approvalRequiredBy.map { "(approval required by \(span($0)))" }, span(p.spanId),
                ].compactMap { $0 }
                    .joined(separator: " ")
            })
        out += row(
            "approval",
            card.approval.map { a in
                [
                    a.decision, a.approver.map { "by \($0)" }, a.ticket.map { "ticket=\($0)" },
                    a.requestedAt.map { "requested \($0)" }, a.decidedAt.map { "decided \($0)" }, span(a.spanId),
                ]
                .compactMap { $0 }.joined(separator: " ")
            })
        out += row(
            "execution",
            card.execution.map { x in
                [
                    x.tool, x.status, x.operationId.map { "operation=\($0)" },
                    x.idempotencyKey.map { "idempotency=\($0)" },
                    "retries=\(x.retries)", span(x.spanId),
                ].compactMap { $0 }.joined(separator: " ")
            })
        if card.findings.isEmpty {
            out += row("findings", "none on this path")
        } else {
            for (n, f) in card.findings.enumerated() {
                out += row(n == 0 ? "findings" : "", "[\(f.severity)] \(f.kind): \(f.message)")
            }
        }
        return out
    }
}

struct Why: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Why a step happened: the incident card, and with --path the full causal path.",
        discussion: """
            Give a run and a span, or start from a side effect with --operation-id, --ticket-id, \
            --idempotency-key (or --key K --value V for any indexed key). The card answers: \
            which model call proposed it, which lookup resolved the entity, what memory or \
            retrieval fed it, the policy decision, the approval and who gave it, and what \
            executed; each with its span ID. Path legend: └ the chain from the root, · earlier \
            steps that completed first, ▶ the step asked about, ↳ linked steps.
            """)

    @OptionGroup var options: APIOptions

    @Argument(help: "Run ID.") var runID: String?
    @Argument(help: "Span ID (16 hex characters).") var spanID: String?
    @Option(name: .customLong("operation-id"), help: "Start from this operation.id.") var operationID: String?
    @Option(name: .customLong("ticket-id"), help: "Start from this ticket.id.") var ticketID: String?
    @Option(name: .customLong("idempotency-key"), help: "Start from this idempotency.key.") var idempotencyKey: String?
    @Option(help: "Start from any indexed key (with --value).") var key: String?
    @Option(help: "The value for --key.") var value: String?
    @Flag(help: "Also print the full causal path.") var path = false

    // Checked here rather than in run() so the usage printed with the error is this command's.
    func validate() throws {
        if (key == nil) != (value == nil) { throw ValidationError("--key and --value go together") }
        let external = [operationID, ticketID, idempotencyKey, key].contains { $0 != nil }
        if !external && (runID == nil || spanID == nil) {
            throw ValidationError(Self.startHint)
        }
    }

    static let startHint = "give RUN_ID SPAN_ID, or --operation-id / --ticket-id / --idempotency-key"

    func run() async throws {
        let external: (String, String)? =
            operationID.map { ("operation.id", $0) } ?? ticketID.map { ("ticket.id", $0) }
            ?? idempotencyKey.map { ("idempotency.key", $0) } ?? key.flatMap { k in value.map { (k, $0) } }
        if let (k, v) = external {
            let data = try await fetch(options, "/api/v1/lookup?key=\(pathSegment(k))&value=\(pathSegment(v))")
            if options.json { return printBody(data) }
            let body = try JSONDecoder().decode(LookupBody.self, from: data)
            for m in body.matches {
                print("\(k)=\(v): run \(m.runId) (tenant \(m.tenant))")
                print(render(m.path), terminator: "")
            }
            return
        }
        guard let runID, let spanID else {
            throw ValidationError(Self.startHint)
        }
        let data = try await fetch(options, "/api/v1/runs/\(pathSegment(runID))/path?to=\(pathSegment(spanID))")
        if options.json { return printBody(data) }
        let view = try JSONDecoder().decode(RunGraph.PathView.self, from: data)
        print("run \(view.runId)")
        print(render(view), terminator: "")
    }

    func render(_ view: RunGraph.PathView) -> String {
        let name = view.steps.last { $0.role == "target" }?.node.name ?? ""
        var out = view.answer.map { CardPrinter.render($0, target: name) } ?? ""
        if path {
            out += "causal path to \(view.target):\n" + PathPrinter.render(view.steps)
        } else {
            out += "(the full causal path: --path)\n"
        }
        return out
    }
}

struct Find: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find runs where a span matches an expression.",
        discussion: """
            Example: flightrec find 'gen_ai.tool.name = "disable_managed_device" and policy.outcome = "blocked"'
            Fields: attribute keys, resource.<key>, name, status, duration, start, tenant, agent, \
            agent.version, span_id, trace_id.
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
