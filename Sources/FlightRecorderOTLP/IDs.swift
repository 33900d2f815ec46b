import FlightRecorderCore

/// A 16-byte OTLP trace ID, kept as two big-endian halves so it hashes and compares cheaply.
public struct TraceID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Reads 16 big-endian bytes; nil unless exactly 16.
    public init?(bytes: UnsafeRawBufferPointer) {
        guard bytes.count == 16 else { return nil }
        self.high = UInt64(bigEndianBytes: bytes, at: 0)
        self.low = UInt64(bigEndianBytes: bytes, at: 8)
    }

    public init?(hex: some StringProtocol) {
        guard hex.utf8.count == 32, let h = UInt64(hex.prefix(16), radix: 16),
            let l = UInt64(hex.suffix(16), radix: 16)
        else { return nil }
        self.high = h
        self.low = l
    }

    public var isZero: Bool { high == 0 && low == 0 }
    public var hex: String { Hex.encode(high, low) }
    public var description: String { hex }

    /// The 16 big-endian bytes, as stored in the index.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 {
            out[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i)))
            out[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i)))
        }
        return out
    }

    public static func < (a: TraceID, b: TraceID) -> Bool { (a.high, a.low) < (b.high, b.low) }
}

/// An 8-byte OTLP span ID.
public struct SpanID: Hashable, Sendable, CustomStringConvertible {
    public var value: UInt64

    public init(_ value: UInt64) { self.value = value }

    public init?(bytes: UnsafeRawBufferPointer) {
        guard bytes.count == 8 else { return nil }
        self.value = UInt64(bigEndianBytes: bytes, at: 0)
    }

    public init?(hex: some StringProtocol) {
        guard hex.utf8.count == 16, let v = UInt64(hex, radix: 16) else { return nil }
        self.value = v
    }

    public var isZero: Bool { value == 0 }
    public var hex: String { Hex.encode(value) }
    public var description: String { hex }

    public var bytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) }
    }
}

extension UInt64 {
    init(bigEndianBytes b: UnsafeRawBufferPointer, at offset: Int) {
        var v: UInt64 = 0
        for i in 0..<8 { v = (v << 8) | UInt64(b[offset + i]) }
        self = v
    }
}
