import Synchronization

/// Failures tests inject into the store's file operations, as the operating system would
/// report them (an `errno`), at named points and only for files under one directory, so tests
/// running in parallel do not see each other's faults. Nothing is armed outside tests; the
/// unarmed check is one atomic load.
package enum FaultInjection {
    package enum Point: Hashable, Sendable {
        /// Creating the next segment file (its header write) at a roll.
        case segmentCreate
        /// Appending a group's blocks to the active segment.
        case segmentWrite
        /// fdatasync of the active segment.
        case segmentSync
        /// Committing an indexing round's transaction.
        case indexCommit
        /// Finishing a segment index's seal (its vacuum and sync).
        case indexSeal
    }

    private struct Key: Hashable {
        var point: Point
        var directory: String
    }

    private static let armed = Atomic<Int>(0)
    private static let faults = Mutex<[Key: (errno: Int32, remaining: Int)]>([:])

    /// Makes the next `times` operations at `point` on files under `directory` fail with `errno`.
    package static func arm(_ point: Point, errno: Int32, times: Int = .max, under directory: String) {
        faults.withLock { f in
            f[Key(point: point, directory: directory)] = (errno, times)
            armed.store(f.count, ordering: .releasing)
        }
    }

    /// Clears every fault armed under `directory`.
    package static func disarm(under directory: String) {
        faults.withLock { f in
            f = f.filter { $0.key.directory != directory }
            armed.store(f.count, ordering: .releasing)
        }
    }

    /// The errno the operation at `point` on `path` fails with, if one is armed (consuming one use).
    static func take(_ point: Point, path: String) -> Int32? {
        guard armed.load(ordering: .acquiring) > 0 else { return nil }
        return faults.withLock { f -> Int32? in
            guard let (key, fault) = f.first(where: { $0.key.point == point && path.hasPrefix($0.key.directory) }),
                fault.remaining > 0
            else { return nil }
            if fault.remaining == 1 { f[key] = nil } else { f[key] = (fault.errno, fault.remaining - 1) }
            armed.store(f.count, ordering: .releasing)
            return fault.errno
        }
    }
}
