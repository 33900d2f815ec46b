import ArgumentParser

/// `flightrec`: the FlightRecorder daemon and its query commands.
@main
struct FlightRec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flightrec",
        abstract: "Flight recorder for production AI agents: stores OTLP spans durably and reads runs back.",
        discussion: """
            Exit codes: 0 success; 1 unexpected failure; 64 usage error; 66 unknown run or trace;
            69 daemon unreachable; 73 cannot open the data directory; 75 data directory in use
            by another process; 78 configuration error.
            """,
        subcommands: [Serve.self, Runs.self, RunCommand.self, Reindex.self, RedactionCommand.self])
}

/// Process exit codes, from sysexits(3) where one fits.
enum Exit {
    static let failure = ExitCode(1)
    static let usage = ExitCode(64)
    static let notFound = ExitCode(66)
    static let unavailable = ExitCode(69)
    static let cannotCreate = ExitCode(73)
    static let tempFail = ExitCode(75)
    static let config = ExitCode(78)
}

/// Prints to standard error.
func printError(_ message: String) {
    var stderr = StandardError()
    print("flightrec: \(message)", to: &stderr)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        FileHandleWriter.write(string, fd: 2)
    }
}

enum FileHandleWriter {
    static func write(_ string: String, fd: Int32) {
        var s = string
        s.withUTF8 { buf in
            var off = 0
            while off < buf.count {
                let n = sysWrite(fd, buf.baseAddress! + off, buf.count - off)
                if n <= 0 { break }
                off += n
            }
        }
    }
}

@_silgen_name("write")
private func sysWrite(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int) -> Int
