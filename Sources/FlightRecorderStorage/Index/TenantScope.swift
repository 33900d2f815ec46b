/// The tenants a query may see: every tenant (no tokens configured, or an admin), or the
/// tenants of the caller's token. Queries never reveal that a run exists outside the scope.
public enum TenantScope: Sendable, Equatable {
    case all
    case only(Set<String>)

    public func contains(_ tenant: String) -> Bool {
        switch self {
        case .all: true
        case .only(let set): set.contains(tenant)
        }
    }
}
