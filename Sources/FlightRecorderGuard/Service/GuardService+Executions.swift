import FlightRecorderCore
public import FlightRecorderGuardPolicy
import FlightRecorderOTLP
import FlightRecorderRedaction
import Foundation
import Logging

/// Executions after the fact: replay by key, the uncertain list, reconciliation, run state.
extension GuardService {
    public func execution(key: String, tenant: String) throws(GuardError) -> ExecuteAnswer {
        guard let e = try fetch({ () throws in try store.execution(tenant: tenant, key: key) }) else {
            throw GuardError(.notFound, "no execution with idempotency_key \(key)")
        }
        return ExecuteAnswer(e, result: Self.parse(e.result), replayed: true)
    }

    public func uncertain(tenants: Set<String>?) throws(GuardError) -> [ExecutionRecord] {
        try fetch { () throws in try store.uncertain(tenants: tenants) }
    }

    /// Records the real outcome of an uncertain write, found out of band by an operator with
    /// an approver role. It leaves `/v1/uncertain`; the key keeps answering with this outcome.
    public func reconcile(
        key: String, actorID: String, succeeded: Bool, operationID: String?, note: String?
    ) throws(GuardError) -> ExecuteAnswer {
        guard let actor = policy.actors[actorID], !actor.roles.isDisjoint(with: policy.approverRoles) else {
            throw GuardError(.forbidden, "reconciling needs a configured actor with an approver role")
        }
        guard var e = try fetch({ () throws in try store.execution(tenant: actor.tenant, key: key) }) else {
            throw GuardError(.notFound, "no execution with idempotency_key \(key)")
        }
        guard e.status.isUncertain else {
            throw GuardError(.conflict, "execution \(key) is \(e.status.rawValue), not uncertain")
        }
        e.status = succeeded ? .succeeded : .failed
        if let operationID { e.operationID = operationID }
        e.reconciledBy = actorID
        e.reason = "reconciled by \(actorID)" + (note.map { ": " + redactText($0, tenant: actor.tenant) } ?? "")
        let record = e
        emitReconciliation(record, actorID: actorID)
        try save { () throws in try store.put(record) }
        return ExecuteAnswer(e, result: Self.parse(e.result), replayed: true)
    }

    public func runState(tenant: String, run: String) throws(GuardError) -> RunState { try load(tenant, run) }
}
