/// Checks the nesting depth of an OTLP trace request before protobuf-c sees it.
///
/// protobuf-c unpacks nested messages recursively with no depth limit, and `AnyValue` may nest
/// arrays and key-value lists without bound, so a small hostile body could exhaust the stack.
/// This iterative scan follows only the schema's message-typed fields (nothing else can nest)
/// and rejects a body deeper than `maxDepth` or with a malformed length. No library offers a
/// depth check for protobuf-c, hence the hand-written walk.
public enum WireDepthGuard {
    /// Message kinds of the OTLP trace schema that can contain other messages.
    enum Kind {
        case request, resourceSpans, resource, scopeSpans, scope, span, event, link, status
        case keyValue, anyValue, arrayValue, keyValueList, leaf

        func child(field: UInt64) -> Kind {
            switch self {
            case .request: field == 1 ? .resourceSpans : .leaf
            case .resourceSpans: field == 1 ? .resource : field == 2 ? .scopeSpans : .leaf
            case .resource: field == 1 ? .keyValue : .leaf
            case .scopeSpans: field == 1 ? .scope : field == 2 ? .span : .leaf
            case .scope: field == 3 ? .keyValue : .leaf
            case .span:
                switch field {
                case 9: .keyValue
                case 11: .event
                case 13: .link
                case 15: .status
                default: .leaf
                }
            case .event: field == 3 ? .keyValue : .leaf
            case .link: field == 4 ? .keyValue : .leaf
            case .keyValue: field == 2 ? .anyValue : .leaf
            case .anyValue: field == 5 ? .arrayValue : field == 6 ? .keyValueList : .leaf
            case .arrayValue: field == 1 ? .anyValue : .leaf
            case .keyValueList: field == 1 ? .keyValue : .leaf
            case .status, .leaf: .leaf
            }
        }
    }

    public enum Failure: Error, Equatable {
        case tooDeep(Int)
        case malformed(offset: Int)
    }

    /// Throws `Failure` when the body nests deeper than `maxDepth` or is not well-formed wire format.
    public static func check(_ body: UnsafeRawBufferPointer, maxDepth: Int = 128) throws(Failure) {
        var stack: [(kind: Kind, end: Int)] = [(.request, body.count)]
        var cursor = WireCursor(body, 0..<body.count)
        func readVarint() throws(Failure) -> UInt64 {
            guard let v = cursor.varint() else { throw .malformed(offset: cursor.pos) }
            return v
        }
        while let top = stack.last {
            if cursor.pos == top.end {
                stack.removeLast()
                continue
            }
            guard cursor.pos < top.end else { throw .malformed(offset: cursor.pos) }
            let key = try readVarint()
            let field = key >> 3
            switch key & 7 {
            case 0: _ = try readVarint()
            case 1: cursor.pos += 8
            case 5: cursor.pos += 4
            case 2:
                let length = try readVarint()
                guard length <= UInt64(top.end - cursor.pos) else { throw .malformed(offset: cursor.pos) }
                let child = top.kind.child(field: field)
                if child == .leaf {
                    cursor.pos += Int(length)
                } else {
                    guard stack.count < maxDepth else { throw .tooDeep(maxDepth) }
                    stack.append((child, cursor.pos + Int(length)))
                }
            default: throw .malformed(offset: cursor.pos)
            }
            if cursor.pos > top.end { throw .malformed(offset: top.end) }
        }
        if cursor.pos != body.count { throw .malformed(offset: cursor.pos) }
    }
}
