/// Appends protobuf wire format to a byte array.
///
/// Hand-written because the project decodes with protobuf-c (C structs) but must also build
/// OTLP messages from Swift values: the OTLP/JSON transcoder, google.rpc.Status error bodies
/// and the load generator. Building protobuf-c structs by hand from Swift would mean manual
/// C memory management, and swift-protobuf would add a second generated code base for the
/// same schema. This writer covers only the wire types OTLP uses.
public struct ProtobufWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// Appends bytes that are already wire format (a field copied verbatim).
    public mutating func raw(_ wire: some Collection<UInt8>) {
        bytes.append(contentsOf: wire)
    }

    private mutating func tag(_ field: Int, _ wireType: UInt64) {
        varint(UInt64(field) << 3 | wireType)
    }

    /// A varint field (int32, int64, uint32, uint64, bool, enum). Zero is still written:
    /// callers skip proto3 defaults themselves where that matters.
    public mutating func varintField(_ field: Int, _ value: UInt64) {
        tag(field, 0)
        varint(value)
    }

    public mutating func int64Field(_ field: Int, _ value: Int64) {
        varintField(field, UInt64(bitPattern: value))
    }

    public mutating func fixed64Field(_ field: Int, _ value: UInt64) {
        tag(field, 1)
        var v = value
        for _ in 0..<8 {
            bytes.append(UInt8(truncatingIfNeeded: v))
            v >>= 8
        }
    }

    public mutating func doubleField(_ field: Int, _ value: Double) {
        fixed64Field(field, value.bitPattern)
    }

    public mutating func fixed32Field(_ field: Int, _ value: UInt32) {
        tag(field, 5)
        var v = value
        for _ in 0..<4 {
            bytes.append(UInt8(truncatingIfNeeded: v))
            v >>= 8
        }
    }

    public mutating func bytesField(_ field: Int, _ value: some Collection<UInt8>) {
        tag(field, 2)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    public mutating func stringField(_ field: Int, _ value: String) {
        bytesField(field, value.utf8)
    }

    /// A nested message, built by `body` and written with its length prefix.
    public mutating func messageField(_ field: Int, _ body: (inout ProtobufWriter) throws -> Void) rethrows {
        var inner = ProtobufWriter()
        try body(&inner)
        bytesField(field, inner.bytes)
    }
}
