package import FlightRecorderOTLP
package import FlightRecorderSQLite
package import FlightRecorderStorage

/// Which run a stored span belongs to, the rule every query applies: the run the span names
/// itself (on the span, then on its resource, by `RunIdentity`), else the run its trace
/// belongs to in the index, else its trace ID. Ingest applies the same rule when it indexes.
package struct RunResolver: Sendable {
    package let identity: RunIdentity

    package init(identity: RunIdentity) { self.identity = identity }

    package func run(of span: SpanRecord, traceRun: String?) -> String {
        identity.explicitRunID(span: span.attributes, resource: span.resource.attributes) ?? traceRun
            ?? span.traceID.hex
    }

    /// The run the index assigns to `trace` within `tenant`, else the trace ID.
    package func traceRun(_ trace: TraceID, tenant: String, reader: IndexReader) throws(SQLiteError) -> String {
        try reader.runs(ofTrace: trace, scope: .only([tenant])).first?.run ?? trace.hex
    }
}
