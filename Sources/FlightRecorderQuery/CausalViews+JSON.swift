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
