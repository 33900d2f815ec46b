import Foundation

/// POSIX ustar archives, the bundle's container: a 512-byte header per file (name, mode, size,
/// time, checksum), the file padded to 512 bytes, two zero blocks at the end. Any `tar`
/// extracts it.
///
/// Hand-written: the packages this project may use write zip (ZIPFoundation), which needs
/// random access to finish its central directory; a bundle is streamed over HTTP as it is
/// read from disk, and ustar's header is the one fixed layout below.
public enum Tar {
    public static let block = 512

    /// The header of a regular file `name` (at most 100 bytes) of `size` bytes.
    public static func header(name: String, size: Int, mtime: Int) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: block)
        func put(_ s: String, at offset: Int, width: Int) {
            for (i, b) in s.utf8.prefix(width).enumerated() { h[offset + i] = b }
        }
        func octal(_ v: Int, at offset: Int, width: Int) {
            put(String(String(v, radix: 8).suffix(width - 1)).leftPadded(to: width - 1), at: offset, width: width - 1)
        }
        precondition(name.utf8.count <= 100, "tar member names are at most 100 bytes")
        put(name, at: 0, width: 100)
        octal(0o644, at: 100, width: 8)
        octal(0, at: 108, width: 8)
        octal(0, at: 116, width: 8)
        octal(size, at: 124, width: 12)
        octal(mtime, at: 136, width: 12)
        for i in 148..<156 { h[i] = 0x20 }
        h[156] = UInt8(ascii: "0")
        put("ustar", at: 257, width: 6)
        put("00", at: 263, width: 2)
        let sum = h.reduce(0) { $0 + Int($1) }
        put(String(String(sum, radix: 8)).leftPadded(to: 6), at: 148, width: 6)
        h[154] = 0
        h[155] = 0x20
        return h
    }

    public static func padding(_ size: Int) -> Int { (block - size % block) % block }

    public struct Member: Sendable {
        public var name: String
        /// The member's bytes within the archive.
        public var range: Range<Int>
    }

    public struct FormatError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// The regular files of `archive`, in order. Rejects anything else: a bad checksum, a link
    /// or directory, a truncated member, bytes after the end.
    public static func members(_ archive: UnsafeRawBufferPointer) throws(FormatError) -> [Member] {
        var out: [Member] = []
        var at = 0
        while true {
            guard at + block <= archive.count else {
                throw FormatError(description: "archive: truncated (no end-of-archive blocks)")
            }
            let h = UnsafeRawBufferPointer(rebasing: archive[at..<at + block])
            if h.allSatisfy({ $0 == 0 }) {
                let rest = UnsafeRawBufferPointer(rebasing: archive[(at + block)...])
                guard rest.count >= block, rest.allSatisfy({ $0 == 0 }) else {
                    throw FormatError(description: "archive: data after the end-of-archive block")
                }
                return out
            }
            func field(_ offset: Int, _ width: Int) -> String {
                let bytes = h[offset..<offset + width].prefix { $0 != 0 }
                return String(decoding: bytes, as: UTF8.self)
            }
            func number(_ offset: Int, _ width: Int) -> Int? {
                Int(field(offset, width).trimmingCharacters(in: .whitespaces), radix: 8)
            }
            var sum = 0
            for (i, b) in h.enumerated() { sum += (148..<156).contains(i) ? 0x20 : Int(b) }
            guard number(148, 8) == sum else {
                throw FormatError(description: "archive: member \(out.count + 1) has a bad header checksum")
            }
            let name = field(0, 100)
            guard h[156] == UInt8(ascii: "0") || h[156] == 0 else {
                throw FormatError(description: "archive: \(name) is not a regular file")
            }
            guard let size = number(124, 12), size >= 0, at + block + size <= archive.count else {
                throw FormatError(description: "archive: \(name) is truncated")
            }
            let padded = at + block + size + padding(size)
            guard padded <= archive.count,
                UnsafeRawBufferPointer(rebasing: archive[(at + block + size)..<padded]).allSatisfy({ $0 == 0 })
            else { throw FormatError(description: "archive: \(name)'s padding is not zeros") }
            out.append(Member(name: name, range: at + block..<at + block + size))
            at = padded
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
