package import COTLP

#if canImport(Glibc)
import Glibc
#endif

// Short names for the protobuf-c generated structs (Schemas/generate.sh).
package typealias CExportRequest = Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest
package typealias CTracesData = Opentelemetry__Proto__Trace__V1__TracesData
package typealias CResourceSpans = Opentelemetry__Proto__Trace__V1__ResourceSpans
package typealias CScopeSpans = Opentelemetry__Proto__Trace__V1__ScopeSpans
package typealias CSpan = Opentelemetry__Proto__Trace__V1__Span
package typealias CKeyValue = Opentelemetry__Proto__Common__V1__KeyValue
package typealias CAnyValue = Opentelemetry__Proto__Common__V1__AnyValue

extension ProtobufCBinaryData {
    package var rawBuffer: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: data, count: len)
    }
}

/// A NUL-terminated key, prepared once, compared against protobuf-c's `char *` keys.
package struct CKey: Sendable {
    package let bytes: [CChar]
    package let name: String

    package init(_ name: String) {
        self.name = name
        self.bytes = Array(name.utf8CString)
    }

    package func matches(_ key: UnsafePointer<CChar>?) -> Bool {
        guard let key else { return false }
        return bytes.withUnsafeBufferPointer { strcmp($0.baseAddress!, key) == 0 }
    }
}

/// The string form of a scalar attribute value (string or integer), as run IDs use; nil otherwise.
package func scalarString(_ value: UnsafeMutablePointer<CAnyValue>?) -> String? {
    guard let v = value?.pointee else { return nil }
    switch v.value_case.rawValue {
    case 1:
        guard let s = v.string_value, s.pointee != 0 else { return nil }
        return String(cString: s)
    case 3: return String(v.int_value)
    default: return nil
    }
}

/// Finds the first of `keys` present in `attributes` (in the order of `keys`) and returns its value.
package func firstValue(
    of keys: [CKey], in attributes: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, count: Int
) -> String? {
    guard let attributes, count > 0 else { return nil }
    for key in keys {
        for i in 0..<count {
            guard let kv = attributes[i], key.matches(kv.pointee.key) else { continue }
            if let s = scalarString(kv.pointee.value) { return s }
        }
    }
    return nil
}
