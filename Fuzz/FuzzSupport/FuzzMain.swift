import Foundation

/// The entry point of every fuzzer. Built with `-DFUZZING` (and coverage instrumentation,
/// linked against libFuzzer's `fuzzer_no_main` runtime: see Fuzz/README.md), it hands `body`
/// to libFuzzer's driver with the command line. Built normally, it replays the files or
/// folders named on the command line through `body`, which is how `make test` keeps every
/// committed corpus input and past crash passing.
///
/// libFuzzer's own `main` is not used because SwiftPM renames each executable's entry point,
/// so an executable target must keep a Swift `@main`.
public enum FuzzMain {
    nonisolated(unsafe) static var target: ((UnsafeBufferPointer<UInt8>) -> Void)?

    public static func run(_ body: @escaping (UnsafeBufferPointer<UInt8>) -> Void) -> Never {
        #if FUZZING
        target = body
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(
            LLVMFuzzerRunDriver(&argc, &argv) { data, size in
                FuzzMain.target?(UnsafeBufferPointer(start: data, count: size))
                return 0
            })
        #else
        exit(FuzzReplay.main(body))
        #endif
    }
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32
#endif
