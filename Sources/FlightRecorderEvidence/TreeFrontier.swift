/// The right edge of a growing Merkle tree: one complete subtree per set bit of its size,
/// largest first. Enough to append leaves and give the root, in O(log n) memory.
public struct TreeFrontier: Sendable, Equatable {
    public private(set) var size: UInt64 = 0
    /// (level, hash), levels strictly decreasing.
    public private(set) var subtrees: [(level: Int, hash: TreeHash)] = []

    public init() {}

    /// The frontier of the first `size` leaves, from the tree's complete subtrees.
    public init(size: UInt64, _ nodes: some TreeNodes) throws {
        var start: UInt64 = 0
        for level in stride(from: 63, through: 0, by: -1) where size & (1 << UInt64(level)) != 0 {
            subtrees.append((level, try nodes.node(level: level, index: start >> UInt64(level))))
            start += 1 << UInt64(level)
        }
        self.size = size
    }

    /// Appends a leaf hash; `completed` sees every complete subtree this finishes, leaf first
    /// (level, index, hash), so a store can keep the ones it needs.
    public mutating func append(_ leaf: TreeHash, completed: (Int, UInt64, TreeHash) -> Void = { _, _, _ in }) {
        var level = 0
        var hash = leaf
        var index = size
        completed(0, index, hash)
        while let last = subtrees.last, last.level == level {
            subtrees.removeLast()
            hash = .node(last.hash, hash)
            level += 1
            index >>= 1
            completed(level, index, hash)
        }
        subtrees.append((level, hash))
        size += 1
    }

    /// Appends the complete subtree of `1 << level` leaves whose hash is `hash` (a tile
    /// stored in place of leaves no longer at hand); the size must be a multiple of its width.
    public mutating func append(subtree hash: TreeHash, level: Int) {
        let width: UInt64 = 1 << UInt64(level)
        precondition(size & (width - 1) == 0, "a subtree appended off its boundary")
        var level = level
        var hash = hash
        while let last = subtrees.last, last.level == level {
            subtrees.removeLast()
            hash = .node(last.hash, hash)
            level += 1
        }
        subtrees.append((level, hash))
        size += width
    }

    /// MTH of the leaves appended so far.
    public var root: TreeHash {
        guard var r = subtrees.last?.hash else { return .empty }
        for s in subtrees.dropLast().reversed() { r = .node(s.hash, r) }
        return r
    }

    public static func == (a: TreeFrontier, b: TreeFrontier) -> Bool {
        a.size == b.size && a.subtrees.elementsEqual(b.subtrees) { $0.level == $1.level && $0.hash == $1.hash }
    }
}
