import Foundation

/// Runs a fuzz target's body over files, for regression: without `-sanitize=fuzzer` each
/// fuzzer is a small program that feeds every file named on its command line (or every file
/// in the folders named) to the same function libFuzzer calls. `make test` replays the
/// committed corpus this way; `make fuzz` builds the real fuzzers (see Fuzz/README.md).
public enum FuzzReplay {
    public static func main(_ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        var files: [String] = []
        let fm = FileManager.default
        for arg in CommandLine.arguments.dropFirst() {
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: arg, isDirectory: &isDirectory) else {
                FileHandle.standardError.write(Data("no such file: \(arg)\n".utf8))
                exit(66)
            }
            if isDirectory.boolValue {
                let names = (try? fm.contentsOfDirectory(atPath: arg)) ?? []
                files += names.sorted().map { arg + "/" + $0 }
            } else {
                files.append(arg)
            }
        }
        for file in files {
            guard let data = fm.contents(atPath: file) else { continue }
            data.withUnsafeBytes { body($0.bindMemory(to: UInt8.self)) }
        }
        print("replayed \(files.count) inputs")
    }
}
