/// One proof that many leaves are in a tree: the RFC 9162 inclusion proofs of a set of leaves,
/// with every hash they share given once.
///
/// The tree of `size` leaves is walked as RFC 9162 splits it (left subtree of the largest power
/// of two below the count), depth first, left to right. A subtree that holds none of the proven
/// leaves contributes its hash to the proof, in that order; a single proven leaf contributes
/// its leaf hash, which the verifier computes from the data it holds. The root follows.
///
/// Written here because no package this project may use has multi-leaf proofs. For one leaf
/// the proof holds exactly the hashes of its RFC 9162 audit path (in a different order); for
/// the consecutive spans of a run it is a few hashes per block instead of ~log2(size) per span.
public enum Multiproof {
    /// The proof for the leaves at `indices` (strictly increasing, each below `size`).
    public static func prove(indices: [UInt64], size: UInt64, _ nodes: some TreeNodes) throws -> [TreeHash] {
        precondition(zip(indices, indices.dropFirst()).allSatisfy { $0 < $1 }, "indices must increase")
        precondition(indices.last.map { $0 < size } ?? true, "an index is outside the tree")
        var out: [TreeHash] = []
        try walk(0, size, indices[...]) { start, end in out.append(try MerkleTree.hash(nodes, start, end)) }
        return out
    }

    /// The root that `leaves` (the hashes of the leaves at `indices`, in order) and `proof`
    /// give for a tree of `size` leaves; nil when they do not fit together (indices out of
    /// order or range, a proof too short or too long).
    public static func root(indices: [UInt64], leaves: [TreeHash], size: UInt64, proof: [TreeHash]) -> TreeHash? {
        recompute(indices: indices, leaves: leaves, size: size, proof: proof, pathOf: nil)?.root
    }

    /// The RFC 9162 audit path (PATH(m, D[n]), leaf side first) of the leaf at `indices[k]`,
    /// taken from the multiproof: every node on the way up is computed as `root` computes it.
    /// nil when the proof does not fit the leaves.
    public static func auditPath(
        of k: Int, indices: [UInt64], leaves: [TreeHash], size: UInt64, proof: [TreeHash]
    ) -> [TreeHash]? {
        guard indices.indices.contains(k) else { return nil }
        return recompute(indices: indices, leaves: leaves, size: size, proof: proof, pathOf: indices[k])?.path
    }

    /// The walk both use: the root, and the siblings on the way up from leaf `target`.
    private static func recompute(
        indices: [UInt64], leaves: [TreeHash], size: UInt64, proof: [TreeHash], pathOf target: UInt64?
    ) -> (root: TreeHash, path: [TreeHash])? {
        guard indices.count == leaves.count, size > 0, zip(indices, indices.dropFirst()).allSatisfy({ $0 < $1 }),
            indices.last.map({ $0 < size }) ?? true
        else { return nil }
        var next = proof.startIndex
        var leaf = leaves.startIndex
        var path: [TreeHash] = []
        func node(_ start: UInt64, _ end: UInt64, _ wanted: ArraySlice<UInt64>) -> TreeHash? {
            if wanted.isEmpty {
                guard next < proof.endIndex else { return nil }
                defer { next += 1 }
                return proof[next]
            }
            if end - start == 1 {
                defer { leaf += 1 }
                return leaves[leaf]
            }
            let mid = start + MerkleTree.split(end - start)
            let cut = firstIndex(in: wanted, notBelow: mid)
            guard let l = node(start, mid, wanted[..<cut]), let r = node(mid, end, wanted[cut...]) else { return nil }
            if let target, (start..<end).contains(target) { path.append(target < mid ? r : l) }
            return .node(l, r)
        }
        guard let root = node(0, size, indices[...]), next == proof.endIndex else { return nil }
        return (root, path)
    }

    /// The first index of `sorted` whose value is at least `value` (binary search).
    static func firstIndex(in sorted: ArraySlice<UInt64>, notBelow value: UInt64) -> Int {
        var lo = sorted.startIndex
        var hi = sorted.endIndex
        while lo < hi {
            let mid = (lo + hi) / 2
            if sorted[mid] < value { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    private static func walk(
        _ start: UInt64, _ end: UInt64, _ wanted: ArraySlice<UInt64>, _ emit: (UInt64, UInt64) throws -> Void
    ) throws {
        if wanted.isEmpty { return try emit(start, end) }
        if end - start == 1 { return }
        let k = start + MerkleTree.split(end - start)
        let cut = firstIndex(in: wanted, notBelow: k)
        try walk(start, k, wanted[..<cut], emit)
        try walk(k, end, wanted[cut...], emit)
    }
}
