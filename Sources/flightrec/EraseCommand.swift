import ArgumentParser
import FlightRecorderCollector
import FlightRecorderStorage
import Foundation
import NIOHTTP1

/// `flightrec erase`: erase a run, a tenant or a data subject (admin). The data is hidden
/// from every answer once the command returns; `erase list` and `erase show` report them.
struct EraseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "erase",
        abstract: "Erase a run, a tenant or a data subject (admin): hidden from every answer once this returns.",
        discussion: """
            A subject is KEY=VALUE, matched on the stored value: for a pseudonymised key \
            (enduser.id by default) give its pseudonym (flightrec pseudonym VALUE). Refused, \
            naming the hold, when a legal hold covers any of the data.
            """,
        subcommands: [Request.self, List.self, Show.self], defaultSubcommand: Request.self)

    struct Request: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "request", abstract: "Erase (the default).")

        @OptionGroup var api: APIOptions
        @Option(help: "Erase every span of this run.") var run: String?
        @Option(help: "Erase every span of this tenant (with --run or --subject: only within it).") var tenant: String?
        @Option(help: "Erase every run with a span whose KEY has this stored VALUE.") var subject: String?
        @Option(help: "Why (required): the request or obligation it serves.") var reason: String
        @Flag(help: "Return only once the bytes are gone from every segment and index (the receipt is signed).")
        var wait = false
        @Option(help: "With --wait: give up after this many seconds (exit 75; the erasure goes on).")
        var timeout: Int = 3600

        func validate() throws {
            guard !(run != nil && subject != nil), run != nil || subject != nil || tenant != nil else {
                throw ValidationError(
                    "give one of --run, --tenant or --subject (--tenant may narrow --run or --subject)")
            }
        }

        func run() async throws {
            let body = ErasuresAPI.Request(run: run, tenant: tenant, subject: subject, reason: reason)
            var data = try await send(api, .POST, "/api/v1/erasures", json: try JSONEncoder().encode(body))
            var e = try JSONDecoder().decode(Erasure.self, from: data)
            if wait {
                let deadline = ContinuousClock.now + .seconds(timeout)
                while e.state != .erased {
                    guard ContinuousClock.now < deadline else {
                        printError("\(e.id): hidden, but its bytes are not all gone after \(timeout) s; it goes on")
                        throw Exit.tempFail
                    }
                    try await Task.sleep(for: .milliseconds(250))
                    data = try await fetch(api, "/api/v1/erasures/" + pathSegment(e.id))
                    e = try JSONDecoder().decode(Erasure.self, from: data)
                }
            }
            if api.json {
                printBody(data)
                return
            }
            print(
                "\(e.id): \(describe(e)) \(e.state == .erased ? "erased" : "hidden; its bytes go within the hour") "
                    + "(\(e.runs) runs, \(e.spans) spans, \(e.segments.count) segments)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the erasures.")

        @OptionGroup var api: APIOptions

        func run() async throws {
            let data = try await fetch(api, "/api/v1/erasures")
            if api.json {
                printBody(data)
                return
            }
            let list = try JSONDecoder().decode(ErasuresAPI.ListBody.self, from: data).erasures
            if list.isEmpty { print("no erasures") }
            for e in list { print(line(e)) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one erasure.")

        @OptionGroup var api: APIOptions
        @Argument(help: "The erasure's ID (erase list).") var id: String

        func run() async throws {
            let data = try await fetch(api, "/api/v1/erasures/" + pathSegment(id))
            if api.json {
                printBody(data)
                return
            }
            print(line(try JSONDecoder().decode(Erasure.self, from: data)))
        }
    }
}

private func line(_ e: Erasure) -> String {
    let when = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(e.requestedAt)))
    return
        "\(e.id)  \(describe(e))  \(e.state.rawValue)  \(e.runs) runs, \(e.spans) spans  by \(e.requestedBy) at \(when): "
        + e.reason
}

private func describe(_ e: Erasure) -> String {
    switch e.kind {
    case .tenant: "tenant \(e.tenant ?? "")"
    case .run: "a run of tenant \(e.tenant ?? "")"
    case .subject: "subject \(e.key ?? "")=…" + (e.tenant.map { " in tenant \($0)" } ?? "")
    }
}
