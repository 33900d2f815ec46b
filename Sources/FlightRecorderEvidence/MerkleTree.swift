/// Where a tree's complete subtrees come from: the node at `level` and `index` covers leaves
/// `index << level ..< (index + 1) << level`. Level 0 holds the leaf hashes.
public protocol TreeNodes {
    func node(level: Int, index: UInt64) throws -> TreeHash
}

/// RFC 9162's Merkle tree hash, inclusion proofs and consistency proofs (sections 2.1.1 to
/// 2.1.4), over any source of complete subtrees.
///
/// Written here because none of the Swift packages this project may use has them; the
/// algorithms are the RFC's own, and the tests check them against a direct computation for
/// every tree and leaf up to a few dozen leaves.
public enum MerkleTree {
    /// The largest power of two smaller than `n` (n ≥ 2): where the RFC splits a tree.
    @inline(__always)
    static func split(_ n: UInt64) -> UInt64 { 1 << (63 - (n - 1).leadingZeroBitCount) }

    /// MTH(D[start ..< end]).
    public static func hash(_ nodes: some TreeNodes, _ start: UInt64, _ end: UInt64) throws -> TreeHash {
        let n = end - start
        if n == 0 { return .empty }
        if n & (n - 1) == 0 && start % n == 0 {
            let level = n.trailingZeroBitCount
            return try nodes.node(level: level, index: start >> UInt64(level))
        }
        let k = split(n)
        return .node(try hash(nodes, start, start + k), try hash(nodes, start + k, end))
    }

    /// The audit path of leaf `index` in the tree of the first `size` leaves: PATH(m, D[n]).
    public static func inclusionProof(index: UInt64, size: UInt64, _ nodes: some TreeNodes) throws -> [TreeHash] {
        precondition(index < size, "leaf \(index) is not in a tree of \(size)")
        var out: [TreeHash] = []
        try path(index, 0, size, nodes, &out)
        return out
    }

    private static func path(
        _ m: UInt64, _ start: UInt64, _ end: UInt64, _ nodes: some TreeNodes, _ out: inout [TreeHash]
    ) throws {
        let n = end - start
        if n <= 1 { return }
        let k = split(n)
        if m < k {
            try path(m, start, start + k, nodes, &out)
            out.append(try hash(nodes, start + k, end))
        } else {
            try path(m - k, start + k, end, nodes, &out)
            out.append(try hash(nodes, start, start + k))
        }
    }

    /// The proof that the tree of `size` leaves extends the tree of its first `old` leaves:
    /// PROOF(m, D[n]). Empty when `old` is 0 or equals `size`.
    public static func consistencyProof(old: UInt64, size: UInt64, _ nodes: some TreeNodes) throws -> [TreeHash] {
        try consistencyRanges(old: old, size: size).map { try hash(nodes, $0.start, $0.end) }
    }

    /// The leaf ranges whose hashes make up PROOF(m, D[n]), in proof order: they depend on the
    /// two sizes only, so a reader holding those hashes (keyed by range) builds the proof for
    /// any older size it pins.
    public static func consistencyRanges(old: UInt64, size: UInt64) -> [(start: UInt64, end: UInt64)] {
        precondition(old <= size, "a tree of \(old) cannot be consistent with a smaller one of \(size)")
        if old == 0 || old == size { return [] }
        var out: [(UInt64, UInt64)] = []
        subproof(old, 0, size, true, &out)
        return out
    }

    private static func subproof(
        _ m: UInt64, _ start: UInt64, _ end: UInt64, _ whole: Bool, _ out: inout [(UInt64, UInt64)]
    ) {
        let n = end - start
        if m == n {
            if !whole { out.append((start, end)) }
            return
        }
        let k = split(n)
        if m <= k {
            subproof(m, start, start + k, whole, &out)
            out.append((start + k, end))
        } else {
            subproof(m - k, start + k, end, false, &out)
            out.append((start, start + k))
        }
    }

    /// Whether `proof` shows leaf `leaf` at `index` in the tree of `size` leaves with `root`
    /// (RFC 9162, 2.1.3.2).
    public static func verifyInclusion(
        leaf: TreeHash, index: UInt64, size: UInt64, proof: [TreeHash], root: TreeHash
    ) -> Bool {
        guard index < size else { return false }
        var fn = index
        var sn = size - 1
        var r = leaf
        for p in proof {
            if sn == 0 { return false }
            if fn & 1 == 1 || fn == sn {
                r = .node(p, r)
                while fn & 1 == 0 && fn != 0 {
                    fn >>= 1
                    sn >>= 1
                }
            } else {
                r = .node(r, p)
            }
            fn >>= 1
            sn >>= 1
        }
        return sn == 0 && r == root
    }

    /// Whether `proof` shows the tree of `size` leaves with `root` extends the tree of `old`
    /// leaves with `oldRoot` (RFC 9162, 2.1.4.2).
    public static func verifyConsistency(
        old: UInt64, oldRoot: TreeHash, size: UInt64, root: TreeHash, proof: [TreeHash]
    ) -> Bool {
        if old > size { return false }
        if old == size { return proof.isEmpty && oldRoot == root }
        if old == 0 { return proof.isEmpty }
        guard !proof.isEmpty else { return false }
        var path = proof
        if old & (old - 1) == 0 { path.insert(oldRoot, at: 0) }
        var fn = old - 1
        var sn = size - 1
        while fn & 1 == 1 {
            fn >>= 1
            sn >>= 1
        }
        var fr = path[0]
        var sr = path[0]
        for c in path.dropFirst() {
            if sn == 0 { return false }
            if fn & 1 == 1 || fn == sn {
                fr = .node(c, fr)
                sr = .node(c, sr)
                while fn & 1 == 0 && fn != 0 {
                    fn >>= 1
                    sn >>= 1
                }
            } else {
                sr = .node(sr, c)
            }
            fn >>= 1
            sn >>= 1
        }
        return fr == oldRoot && sr == root && sn == 0
    }
}

/// Leaf hashes in memory, as a `TreeNodes`: a bundle's spans, a block's, or a test's.
public struct LeafList: TreeNodes, Sendable {
    public var leaves: [TreeHash]

    public init(_ leaves: [TreeHash]) { self.leaves = leaves }

    public func node(level: Int, index: UInt64) throws -> TreeHash {
        let start = Int(index) << level
        let count = 1 << level
        guard start + count <= leaves.count else { throw TreeError.missingNode(level: level, index: index) }
        return Self.subtree(leaves[start..<start + count])
    }

    /// The hash of a complete subtree (a power-of-two count of leaves).
    public static func subtree(_ leaves: ArraySlice<TreeHash>) -> TreeHash {
        switch leaves.count {
        case 0: return .empty
        case 1: return leaves[leaves.startIndex]
        case 2: return .node(leaves[leaves.startIndex], leaves[leaves.startIndex + 1])
        default:
            // Pairs hashed in place, level by level, in one scratch array.
            var level = Array(leaves)
            var n = level.count
            while n > 1 {
                for i in 0..<n / 2 { level[i] = .node(level[2 * i], level[2 * i + 1]) }
                n /= 2
            }
            return level[0]
        }
    }
}

/// A node a `TreeNodes` cannot give: the data it would be computed from is missing.
public struct TreeError: Error, CustomStringConvertible, Sendable {
    public let description: String

    public static func missingNode(level: Int, index: UInt64) -> TreeError {
        TreeError(description: "tree node at level \(level), index \(index) is not available")
    }
}
