import ArgumentParser
import FlightRecorderConfig
import FlightRecorderCore
import Foundation

/// `flightrec token new | hash`: make bearer tokens and the digests the config stores.
struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Create bearer tokens and the SHA-256 digests auth.tokens stores.",
        subcommands: [New.self, Hash.self])

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Print a new random token and its digest. Give the token to the client; put the digest in the config.")

        func run() throws {
            var bytes = [UInt8](repeating: 0, count: 32)
            var rng = SystemRandomNumberGenerator()
            for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
            let token = "frt_" + Hex.encode(bytes)
            print("token:  \(token)")
            print("sha256: \(AccessToken.digest(of: token))")
        }
    }

    struct Hash: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the SHA-256 digest of a token read from standard input (one line).")

        func run() throws {
            guard let line = readLine(strippingNewline: true), !line.isEmpty else {
                printError("expected a token on standard input")
                throw Exit.usage
            }
            print(AccessToken.digest(of: line))
        }
    }
}
