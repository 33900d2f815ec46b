import ArgumentParser
import FlightRecorderCollector
import FlightRecorderStorage
import Foundation
import NIOHTTP1

/// `flightrec hold add | list | release`: legal holds (admin). Held data is never expired.
struct HoldCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hold", abstract: "Place, list and release legal holds (admin): held data is never expired.",
        subcommands: [Add.self, List.self, Release.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Place a hold on a tenant, a run, or every run with a span matching a where expression.")

        @OptionGroup var api: APIOptions
        @Option(help: "Hold every span of this tenant (with --run: the run's tenant).") var tenant: String?
        @Option(help: "Hold every span of this run.") var run: String?
        @Option(name: .customLong("where"), help: "Hold every run with a span matching this expression.")
        var expression: String?
        @Option(help: "Why (required): the matter or case it serves.") var reason: String

        func validate() throws {
            let scopes = [run != nil || tenant != nil, expression != nil].filter { $0 }.count
            guard scopes == 1, !(expression != nil && tenant != nil) else {
                throw ValidationError("give one of --tenant, --run (optionally with --tenant) or --where")
            }
        }

        func run() async throws {
            let body = HoldsAPI.Request(tenant: tenant, run: run, where: expression, reason: reason)
            let data = try await send(api, .POST, "/api/v1/holds", json: try JSONEncoder().encode(body))
            if api.json {
                printBody(data)
                return
            }
            let hold = try JSONDecoder().decode(Hold.self, from: data)
            print("placed \(hold.id): \(describe(hold))")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the holds in force (--all: released too).")

        @OptionGroup var api: APIOptions
        @Flag(help: "Released holds too, with who released them and when.") var all = false

        func run() async throws {
            let data = try await fetch(api, "/api/v1/holds" + (all ? "?all=true" : ""))
            if api.json {
                printBody(data)
                return
            }
            let holds = try JSONDecoder().decode(HoldsAPI.ListBody.self, from: data).holds
            if holds.isEmpty { print("no holds in force") }
            for h in holds {
                let when = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(h.createdAt)))
                let released = h.releasedAt.map {
                    "  (released by \(h.releasedBy ?? "?") at "
                        + ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double($0))) + ")"
                }
                print("\(h.id)  \(describe(h))  by \(h.createdBy) at \(when): \(h.reason)\(released ?? "")")
            }
        }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Release a hold: its data expires as usual again.")

        @OptionGroup var api: APIOptions
        @Argument(help: "The hold's ID (hold list).") var id: String

        func run() async throws {
            let data = try await send(api, .DELETE, "/api/v1/holds/" + pathSegment(id))
            if api.json {
                printBody(data)
                return
            }
            let hold = try JSONDecoder().decode(Hold.self, from: data)
            print("released \(hold.id): \(describe(hold))")
        }
    }
}

private func describe(_ h: Hold) -> String {
    switch h.kind {
    case .tenant: "tenant \(h.value)"
    case .run: "run \(h.value)" + (h.tenant.map { " of tenant \($0)" } ?? "")
    case .where: "runs where \(h.value)"
    }
}
