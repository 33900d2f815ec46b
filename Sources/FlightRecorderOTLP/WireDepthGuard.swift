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

    /// Throws `WireFormatError` when the body nests deeper than `maxDepth` or is not well-formed wire format.
    public static func check(_ body: UnsafeRawBufferPointer, maxDepth: Int = 128) throws(WireFormatError) {
        // The stack of open messages on the thread's stack, not in an array: a heap allocation
        // for every request and every message an audit verifier unpacks.
        let failure = withUnsafeTemporaryAllocation(of: (kind: Kind, end: Int).self, capacity: max(1, maxDepth)) {
            stack -> WireFormatError? in
            stack[0] = (.request, body.count)
            var depth = 1
            var pos = 0
            while depth > 0 {
                let top = stack[depth - 1]
                if pos == top.end {
                    depth -= 1
                    continue
                }
                // Each field is read by a cursor bounded by its enclosing message, so neither a
                // key, a varint nor a length may run past the message that holds it.
                var cursor = WireCursor(body, pos..<top.end)
                guard let field = cursor.field() else { return .malformed(offset: pos) }
                let child = field.wireType == 2 ? top.kind.child(field: field.number) : .leaf
                if child == .leaf {
                    pos = field.range.upperBound
                } else {
                    guard depth < maxDepth else { return .tooDeep(maxDepth) }
                    stack[depth] = (child, field.payload.upperBound)
                    depth += 1
                    pos = field.payload.lowerBound
                }
            }
            return nil
        }
        if let failure { throw failure }
    }
}

/// Why a body was refused before protobuf-c saw it.
public struct WireFormatError: Error, Equatable, Sendable, CustomStringConvertible {
    private enum Code: Equatable, Sendable {
        case tooDeep(Int)
        case malformed(offset: Int)
    }
    private let code: Code

    static func tooDeep(_ depth: Int) -> WireFormatError { WireFormatError(code: .tooDeep(depth)) }
    static func malformed(offset: Int) -> WireFormatError { WireFormatError(code: .malformed(offset: offset)) }

    public var description: String {
        switch code {
        case .tooDeep(let depth): "message nests deeper than \(depth) levels"
        case .malformed(let offset): "malformed protobuf at byte \(offset)"
        }
    }
}
