import FlightRecorderOTLP

/// Makes every replay of a pre-encoded `ExportTraceServiceRequest` carry new IDs, so a
/// benchmark stores unique spans instead of re-inserting the same keys.
///
/// Each request is walked once to find its ID fields: span, parent and link trace and span
/// IDs, and the string values of run-identity and external-ID attributes (span and resource).
/// Pass `p` then patches them in a copy, in place and at the same length: IDs are XORed with a
/// key derived from `p` (a bijection, so parents, links and runs that span traces keep their
/// structure), and ID strings get the hash of (value, p) in hex over their last 12 bytes (all
/// of them when shorter), so every span of a run still names the same run. Timestamps move
/// by the requests' time range per pass. Pass 0 leaves the request as it was.
struct UniqueRequests: Sendable {
    enum Kind: UInt8, Sendable {
        case traceID, spanID, idString, time
    }

    struct Site: Sendable {
        var offset: Int32
        var length: Int32
        var kind: Kind
    }

    struct Request: Sendable {
        var bytes: [UInt8]
        var spans: Int
        var sites: [Site]
    }

    let requests: [Request]
    /// How far each pass moves every timestamp: the requests' whole time range and a second,
    /// so pass after pass the spans arrive in time order, as a recorder running for months sees them.
    let passShift: UInt64
    /// Attribute keys whose string values are IDs.
    static let idKeys: Set<String> = Set(
        RunIdentity.defaultKeys + AgentKeys.defaultExternalIDKeys + ["gen_ai.response.id"])

    init(_ bodies: [[UInt8]]) {
        requests = bodies.map { body in
            var sites: [Site] = []
            var spans = 0
            Self.walkRequest(body, &sites, &spans)
            return Request(bytes: body, spans: spans, sites: sites)
        }
        var low = UInt64.max
        var high = UInt64.min
        for r in requests {
            for site in r.sites where site.kind == .time {
                let v = r.bytes.withUnsafeBytes {
                    UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: Int(site.offset), as: UInt64.self))
                }
                guard v > 0 else { continue }
                low = min(low, v)
                high = max(high, v)
            }
        }
        passShift = high >= low ? high - low + 1_000_000_000 : 0
    }

    var totalSpans: Int { requests.reduce(0) { $0 + $1.spans } }

    /// Request `index` as pass `pass` sends it.
    func bytes(_ index: Int, pass: Int) -> [UInt8] {
        let r = requests[index]
        guard pass > 0 else { return r.bytes }
        var out = r.bytes
        let key = Self.mix(UInt64(pass) &* 0x9E37_79B9_7F4A_7C15)
        let key2 = Self.mix(key ^ 0xD1B5_4A32_D192_ED03)
        out.withUnsafeMutableBytes { b in
            for s in r.sites {
                let at = Int(s.offset)
                switch s.kind {
                case .traceID:
                    Self.xor(b, at, key)
                    Self.xor(b, at + 8, key2)
                case .spanID:
                    Self.xor(b, at, key2 ^ key)
                case .idString:
                    Self.patchString(b, at: at, length: Int(s.length), pass: UInt64(pass))
                case .time:
                    let v = UInt64(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt64.self))
                    guard v > 0 else { continue }
                    b.storeBytes(of: (v &+ passShift &* UInt64(pass)).littleEndian, toByteOffset: at, as: UInt64.self)
                }
            }
        }
        return out
    }

    /// What an ID string becomes in pass `pass` (the load generator's samples for queries).
    static func rewritten(_ value: String, pass: Int) -> String {
        guard pass > 0 else { return value }
        var bytes = Array(value.utf8)
        bytes.withUnsafeMutableBytes { patchString($0, at: 0, length: $0.count, pass: UInt64(pass)) }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func patchString(_ b: UnsafeMutableRawBufferPointer, at: Int, length: Int, pass: UInt64) {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ pass
        for i in 0..<length { h = (h ^ UInt64(b[at + i])) &* 0x100_0000_01B3 }
        h = mix(h)
        let hex = Array("0123456789abcdef".utf8)
        let n = min(length, 12)
        for i in 0..<n { b[at + length - n + i] = hex[Int((h >> (4 * UInt64(i))) & 0xF)] }
    }

    static func xor(_ b: UnsafeMutableRawBufferPointer, _ at: Int, _ key: UInt64) {
        for i in 0..<8 { b[at + i] ^= UInt8(truncatingIfNeeded: key >> (8 * UInt64(i))) }
    }

    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    // MARK: A minimal protobuf walk over the fields that hold IDs (the requests are our own
    // or the SDK's, already valid; anything unexpected just ends the walk of that message).

    struct Field {
        var number: Int
        var wireType: Int
        var start: Int  // of a length-delimited payload
        var end: Int
    }

    static func fields(_ b: [UInt8], _ range: Range<Int>, _ body: (Field) -> Void) {
        var i = range.lowerBound
        func varint() -> UInt64? {
            var v: UInt64 = 0
            var shift: UInt64 = 0
            while i < range.upperBound && shift < 64 {
                let byte = b[i]
                i += 1
                v |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return v }
                shift += 7
            }
            return nil
        }
        while i < range.upperBound {
            guard let key = varint() else { return }
            let number = Int(key >> 3)
            let wireType = Int(key & 7)
            switch wireType {
            case 0: guard varint() != nil else { return }
            case 1:
                guard i + 8 <= range.upperBound else { return }
                body(Field(number: number, wireType: 1, start: i, end: i + 8))
                i += 8
            case 5: i += 4
            case 2:
                guard let n = varint(), Int(n) <= range.upperBound - i else { return }
                body(Field(number: number, wireType: 2, start: i, end: i + Int(n)))
                i += Int(n)
            default: return
            }
        }
    }

    static func walkRequest(_ b: [UInt8], _ sites: inout [Site], _ spans: inout Int) {
        fields(b, 0..<b.count) { rs in
            guard rs.number == 1, rs.wireType == 2 else { return }
            fields(b, rs.start..<rs.end) { f in
                guard f.wireType == 2 else { return }
                if f.number == 1 {  // Resource
                    fields(b, f.start..<f.end) { a in if a.number == 1 && a.wireType == 2 { keyValue(b, a, &sites) } }
                } else if f.number == 2 {  // ScopeSpans
                    fields(b, f.start..<f.end) { s in
                        guard s.number == 2, s.wireType == 2 else { return }
                        spans += 1
                        walkSpan(b, s, &sites)
                    }
                }
            }
        }
    }

    static func walkSpan(_ b: [UInt8], _ span: Field, _ sites: inout [Site]) {
        fields(b, span.start..<span.end) { f in
            if f.wireType == 1 {
                // start_time_unix_nano, end_time_unix_nano
                if f.number == 7 || f.number == 8 { sites.append(Site(offset: Int32(f.start), length: 8, kind: .time)) }
                return
            }
            switch f.number {
            case 1 where f.end - f.start == 16: sites.append(Site(offset: Int32(f.start), length: 16, kind: .traceID))
            case 2 where f.end - f.start == 8, 4 where f.end - f.start == 8:
                sites.append(Site(offset: Int32(f.start), length: 8, kind: .spanID))
            case 9: keyValue(b, f, &sites)
            case 11:  // Event: time_unix_nano
                fields(b, f.start..<f.end) { e in
                    if e.number == 1 && e.wireType == 1 {
                        sites.append(Site(offset: Int32(e.start), length: 8, kind: .time))
                    }
                }
            case 13:  // Link
                fields(b, f.start..<f.end) { l in
                    guard l.wireType == 2 else { return }
                    if l.number == 1 && l.end - l.start == 16 {
                        sites.append(Site(offset: Int32(l.start), length: 16, kind: .traceID))
                    } else if l.number == 2 && l.end - l.start == 8 {
                        sites.append(Site(offset: Int32(l.start), length: 8, kind: .spanID))
                    }
                }
            default: break
            }
        }
    }

    static func keyValue(_ b: [UInt8], _ kv: Field, _ sites: inout [Site]) {
        var key: String?
        var value: Field?
        fields(b, kv.start..<kv.end) { f in
            guard f.wireType == 2 else { return }
            if f.number == 1 { key = String(decoding: b[f.start..<f.end], as: UTF8.self) }
            if f.number == 2 {  // AnyValue: string_value
                fields(b, f.start..<f.end) { v in if v.number == 1 && v.wireType == 2 { value = v } }
            }
        }
        guard let key, let value, idKeys.contains(key), value.end > value.start else { return }
        sites.append(Site(offset: Int32(value.start), length: Int32(value.end - value.start), kind: .idString))
    }
}
