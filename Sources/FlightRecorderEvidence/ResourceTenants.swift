import COTLP
import FlightRecorderOTLP

/// The tenant of a resource, read from its bytes (unpacked alone, as a request of one
/// resource group holding nothing else); the last one's kept, since a block's groups mostly
/// repeat it.
package struct ResourceTenants {
    package init() {}

    var last: (bytes: [UInt8], tenant: String)?

    package mutating func tenant(_ raw: UnsafeRawBufferPointer, _ resource: Range<Int>?) -> String? {
        guard let resource else { return ResourceRecord(attributes: [], scopeName: "", scopeVersion: "").tenant }
        let bytes = UnsafeRawBufferPointer(rebasing: raw[resource])
        if let last, last.bytes.elementsEqual(bytes) { return last.tenant }
        var request: [UInt8] = []
        SpanLeaves.field(1, 1 + SpanLeaves.varintCount(bytes.count) + bytes.count, into: &request)
        SpanLeaves.field(1, bytes.count, into: &request)
        request += bytes
        let tenant: String?? = request.withUnsafeBytes {
            UnpackArena.withRequest($0) { r -> String? in
                guard r.pointee.n_resource_spans == 1, let rs = r.pointee.resource_spans[0] else { return nil }
                let attributes = TracesDataDecoder.attributes(
                    rs.pointee.resource?.pointee.attributes, rs.pointee.resource?.pointee.n_attributes ?? 0)
                return ResourceRecord(attributes: attributes, scopeName: "", scopeVersion: "").tenant
            }
        }
        guard let found = tenant ?? nil else { return nil }
        last = (Array(bytes), found)
        return found
    }
}
