import Foundation

/// Feeds every file named on the command line (or every file in the folders named) to a
/// fuzz target's body; returns the exit status.
enum FuzzReplay {
    static func main(_ body: (UnsafeBufferPointer<UInt8>) -> Void) -> Int32 {
        var files: [String] = []
        let fm = FileManager.default
        for arg in CommandLine.arguments.dropFirst() {
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: arg, isDirectory: &isDirectory) else {
                FileHandle.standardError.write(Data("no such file: \(arg)\n".utf8))
                return 66
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
        return 0
    }
}
