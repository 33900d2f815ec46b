/// Reads protobuf wire format field by field, without allocating: the one walker behind
/// `WireDepthGuard` (nesting check before protobuf-c) and `TraceWireFilter` (cutting stored
/// blocks down to some traces).
package struct WireCursor {
    package struct Field {
        package var number: UInt64
        package var wireType: UInt64
        /// The whole field, tag included.
        package var range: Range<Int>
        /// The value of a length-delimited field (empty for other wire types).
        package var payload: Range<Int>
    }

    let bytes: UnsafeRawBufferPointer
    var pos: Int
    let end: Int

    package init(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) {
        self.bytes = bytes
        self.pos = range.lowerBound
        self.end = range.upperBound
    }

    package var atEnd: Bool { pos >= end }
    /// Bytes left before `end`.
    package var remaining: Int { max(0, end - pos) }

    /// A varint; nil when it runs past `end` or past 64 bits.
    package mutating func varint() -> UInt64? {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while pos < end, shift < 64 {
            let byte = bytes[pos]
            pos += 1
            v |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return v }
            shift += 7
        }
        return nil
    }

    /// Eight bytes, little-endian; nil when they run past `end`.
    package mutating func fixed64() -> UInt64? {
        guard end - pos >= 8 else { return nil }
        defer { pos += 8 }
        return UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: pos, as: UInt64.self))
    }

    /// The next field; nil when the bytes are not valid wire format. Field number 0 is
    /// invalid: protobuf-c accepts it when the key is a non-minimal varint (`85 00`) but
    /// refuses its own minimal re-encoding (`05`), so a request carrying one would be stored
    /// and then never read back, hiding the other spans of its block.
    package mutating func field() -> Field? {
        let start = pos
        guard let tag = varint(), tag >> 3 != 0 else { return nil }
        let wireType = tag & 7
        var payload = pos..<pos
        switch wireType {
        case 0: guard varint() != nil else { return nil }
        case 1: pos += 8
        case 5: pos += 4
        case 2:
            guard let n = varint(), n <= UInt64(end - pos) else { return nil }
            payload = pos..<(pos + Int(n))
            pos += Int(n)
        default: return nil
        }
        guard pos <= end else { return nil }
        return Field(number: tag >> 3, wireType: wireType, range: start..<pos, payload: payload)
    }
}
