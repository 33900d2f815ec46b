public import FlightRecorderCore

// The causal views as JSON, written directly (`JSONWriter`): the same bytes their `Codable`
// form encodes to with sorted keys (`CausalViewJSONTests` compares them), at a fraction of
// the cost. Keys are in sorted order; a field added to a view must be added here too.

extension StepFacts: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("approvalTicket", approvalTicket)
        w.member("approver", approver)
        w.member("arguments", arguments)
        w.member("error", error)
        w.member("idempotencyKey", idempotencyKey)
        w.member("model", model)
        w.member("operation", operation)
        w.member("operationId", operationId)
        w.member("policyOutcome", policyOutcome)
        w.member("policyRule", policyRule)
        w.member("prompt", prompt)
        w.member("promptVersion", promptVersion)
        w.member("status", status)
        w.member("ticketId", ticketId)
        w.member("tier", tier)
        w.member("tool", tool)
        w.endObject()
    }
}

extension StepNode: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("durationNanos", durationNanos)
        w.member("endTimeUnixNano", endTimeUnixNano)
        w.member("facts", facts)
        w.member("name", name)
        w.member("parentSpanId", parentSpanId)
        w.member("service", service)
        w.member("skewShiftNanos", skewShiftNanos)
        w.member("spanId", spanId)
        w.member("startTimeUnixNano", startTimeUnixNano)
        w.member("traceId", traceId)
        w.endObject()
    }
}

extension RunGraph.Edge: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("from", from)
        w.member("to", to)
        w.member("type", type)
        w.endObject()
    }
}

extension RunGraph.Adjustment: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("reason", reason)
        w.member("shiftNanos", shiftNanos)
        w.member("spanId", spanId)
        w.endObject()
    }
}

extension RunGraph.GraphView: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("adjustments", adjustments)
        w.member("edges", edges)
        w.member("missingParents", missingParents)
        w.member("nodes", nodes)
        w.member("runId", runId)
        w.member("traces", traces)
        w.endObject()
    }
}

extension RunGraph.PathStep: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("depth", depth)
        w.member("linked", linked)
        w.member("node", node)
        w.member("role", role)
        w.endObject()
    }
}

extension RunGraph.LinkedStep: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("node", node)
        w.member("path", path)
        w.member("relation", relation)
        w.endObject()
    }
}

extension RunGraph.PathView: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("adjustments", adjustments)
        w.member("answer", answer)
        w.member("runId", runId)
        w.member("steps", steps)
        w.member("target", target)
        w.endObject()
    }
}

extension RunGraph.CriticalSegment: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("durationNanos", durationNanos)
        w.member("endTimeUnixNano", endTimeUnixNano)
        w.member("name", name)
        w.member("spanId", spanId)
        w.member("startTimeUnixNano", startTimeUnixNano)
        w.endObject()
    }
}

extension RunGraph.CriticalPathView: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("adjustments", adjustments)
        w.member("paths", paths)
        w.member("runId", runId)
        w.endObject()
    }
}

extension Finding: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("kind", kind)
        w.member("message", message)
        w.member("severity", severity)
        w.member("spanIds", spanIds)
        w.endObject()
    }
}

extension IncidentCard: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("approval", approval)
        w.member("context", context)
        w.member("entity_resolution", entityResolution)
        w.member("execution", execution)
        w.member("fed_by", fedBy)
        w.member("findings", findings)
        w.member("policy", policy)
        w.member("proposed_by", proposedBy)
        w.member("target", target)
        w.endObject()
    }
}

extension IncidentCard.ProposedBy: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("agent_version", agentVersion)
        w.member("basis", basis)
        w.member("model", model)
        w.member("name", name)
        w.member("prompt_version", promptVersion)
        w.member("span_id", spanId)
        w.endObject()
    }
}

extension IncidentCard.EntityResolution: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("arguments", arguments)
        w.member("match_count", matchCount.map(Int64.init))
        w.member("resolution", resolution)
        w.member("shared_values", sharedValues)
        w.member("span_id", spanId)
        w.member("tool", tool)
        w.endObject()
    }
}

extension IncidentCard.ContextStep: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("age_seconds", ageSeconds)
        w.member("basis", basis)
        w.member("kind", kind)
        w.member("name", name)
        w.member("source", source)
        w.member("span_id", spanId)
        w.endObject()
    }
}

extension IncidentCard.Policy: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("approval_required_by", approvalRequiredBy)
        w.member("outcome", outcome)
        w.member("reason", reason)
        w.member("rule", rule)
        w.member("span_id", spanId)
        w.member("tool", tool)
        w.endObject()
    }
}

extension IncidentCard.Approval: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("approver", approver)
        w.member("decided_at", decidedAt)
        w.member("decision", decision)
        w.member("granted_at", grantedAt)
        w.member("request_span_id", requestSpanId)
        w.member("requested_at", requestedAt)
        w.member("span_id", spanId)
        w.member("ticket", ticket)
        w.endObject()
    }
}

extension IncidentCard.Execution: JSONWritable {
    public func writeJSON(to w: inout JSONWriter) {
        w.beginObject()
        w.member("attempt_span_ids", attemptSpanIds)
        w.member("idempotency_key", idempotencyKey)
        w.member("operation_id", operationId)
        w.member("retries", retries)
        w.member("span_id", spanId)
        w.member("status", status)
        w.member("tool", tool)
        w.endObject()
    }
}
