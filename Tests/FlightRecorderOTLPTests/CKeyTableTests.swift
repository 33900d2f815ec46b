import Testing

@testable import FlightRecorderOTLP

@Suite struct CKeyTableTests {
    /// Exactly the keys, at their positions: not a prefix, an extension, a case variant or a
    /// key that only shares the hash's table slot.
    @Test func matchesExactlyTheKeysAndNothingElse() {
        let names = IndexedKeys.defaultKeys + RunIdentity.defaultKeys
        let table = CKeyTable(names.map(CKey.init))
        func index(_ s: String) -> Int? {
            s.withCString { table.index(of: $0, hash: CKeyTable.hash($0)) }
        }
        for (n, name) in names.enumerated() { #expect(index(name) == n, "\(name)") }
        for miss in ["", "operation", "operation.id.x", "Operation.id", "agent.run", "agent.run.id ", "x"] {
            #expect(index(miss) == nil, "\(miss)")
        }
        // Many keys, so that slots collide: every one is still found, and no other.
        let many = (0..<300).map { "key.\($0)" }
        let big = CKeyTable(many.map(CKey.init))
        for (n, k) in many.enumerated() { #expect(k.withCString { big.index(of: $0, hash: CKeyTable.hash($0)) } == n) }
        #expect("key.300".withCString { big.index(of: $0, hash: CKeyTable.hash($0)) } == nil)
    }
}

@Suite struct IndexedHashTests {
    /// The hash made from a C string on the ingest path is the one a query makes from the
    /// value it is given; values that are not plain ASCII (or are empty or too long) are left
    /// to the `String` path.
    @Test func theCStringHashIsTheStringHash() {
        let prefix = IndexedAttribute.prefix("operation.id")
        for value in ["op-1", "a", String(repeating: "x", count: 512), "with space and = signs"] {
            let fast = value.withCString { IndexedAttribute.hash(prefix: prefix, asciiCString: $0, limit: 512) }
            #expect(fast == IndexedAttribute.hash(key: "operation.id", value: value))
        }
        for value in ["", String(repeating: "x", count: 513), "café", "日本"] {
            #expect(value.withCString { IndexedAttribute.hash(prefix: prefix, asciiCString: $0, limit: 512) } == nil)
        }
    }
}
