import COTLP

/// The facts the index records for each span of a request or stored block, read straight
/// from protobuf-c structs (no per-attribute Swift objects): IDs, times, error status, the run
/// the span names, its resource's agent and tenant, and the indexed attribute values.
///
/// The last stage of ingest, and what recovery and `flightrec reindex` run over stored
/// blocks, so both derive the index from the same code.
public enum IndexFacts {
    public struct Extracted: Sendable {
        public var spans: [SpanIndexEntry] = []
        public var indexed: [IndexedAttribute] = []
        public var resources: [ResourceFacts] = []
        /// The span families' counts (`SpanMetrics`); empty without `MetricRules`.
        public var metrics = SpanFamilyCounts()
    }

    static let agentKeys = [CKey("gen_ai.agent.name"), CKey("service.name")]
    static let tenantKeys = [CKey("tenant.id")]

    struct IndexedValue: Hashable {
        var hash: Int64
        var trace: TraceID
        var resource: Int32
    }

    /// The facts of every span with valid IDs in an unpacked `ExportTraceServiceRequest` (or
    /// `TracesData`, which has the same layout).
    package static func extract(
        _ request: UnsafeMutablePointer<CExportRequest>, runIdentity: RunIdentity, indexedKeys: IndexedKeys,
        metrics rules: MetricRules? = nil
    ) -> Extracted {
        let req = request.pointee
        var total = 0
        for r in 0..<req.n_resource_spans {
            guard let rs = req.resource_spans[r]?.pointee else { continue }
            for s in 0..<rs.n_scope_spans { total += rs.scope_spans[s]?.pointee.n_spans ?? 0 }
        }
        var spans: [SpanIndexEntry] = []
        spans.reserveCapacity(total)
        var indexed: [IndexedAttribute] = []
        var seenIndexed: Set<IndexedValue> = []
        // About one indexed value per span in agent traffic: sized once, not grown by rehashing.
        if !indexedKeys.cKeys.isEmpty {
            indexed.reserveCapacity(total * 2)
            seenIndexed.reserveCapacity(total * 2)
        }
        var resources: [ResourceFacts] = []
        var metrics = MetricAccumulator(counting: rules != nil)
        // The values of the metric keys of the span at hand, by slot.
        let values = SpanMetrics.Values.allocate(capacity: rules?.slotCount ?? 0)
        defer { values.deallocate() }
        // Read for every attribute: held apart, and not optional, so the loop copies nothing
        // (an optional table was copied, four retains and releases, for each attribute).
        let metricKeys = rules?.table ?? CKeyTable.empty
        // This thread's: `extract` never suspends, so no other request uses them meanwhile.
        let labelStrings = SeriesKeyCache.current.labels
        labelStrings.trim()
        var exemplarTrace: TraceID?
        var exemplarTraceHex = ""
        for r in 0..<req.n_resource_spans {
            guard let rs = req.resource_spans[r]?.pointee else { continue }
            let resource = rs.resource?.pointee
            let attrs = resource?.attributes
            let n = resource?.n_attributes ?? 0
            let resourceRun = firstValue(of: runIdentity.cKeys, in: attrs, count: n)
            resources.append(
                ResourceFacts(
                    agent: firstValue(of: Self.agentKeys, in: attrs, count: n),
                    tenant: firstValue(of: Self.tenantKeys, in: attrs, count: n)))
            let resourceIndex = Int32(resources.count - 1)
            let resourceLabels =
                rules == nil ? nil : SpanMetrics.ResourceLabels(facts: resources.last!, strings: labelStrings)
            for s in 0..<rs.n_scope_spans {
                guard let ss = rs.scope_spans[s]?.pointee else { continue }
                for i in 0..<ss.n_spans {
                    guard let span = ss.spans[i]?.pointee,
                        let traceID = TraceID(bytes: span.trace_id.rawBuffer),
                        let spanID = SpanID(bytes: span.span_id.rawBuffer)
                    else { continue }
                    let parent = SpanID(bytes: span.parent_span_id.rawBuffer) ?? SpanID(0)
                    // One pass over the span's attributes finds its run (the first run key, in
                    // `runIdentity` order, with a scalar value) and its indexed values.
                    var run: String?
                    var runRank = Int.max
                    if rules != nil { values.update(repeating: nil) }
                    if let attrs = span.attributes {
                        for a in 0..<span.n_attributes {
                            guard let kv = attrs[a], let key = kv.pointee.key else { continue }
                            let hash = CKeyTable.hash(key)
                            if let slot = metricKeys.index(of: key, hash: hash) {
                                values[slot] = kv.pointee.value
                            }
                            if let rank = runIdentity.table.index(of: key, hash: hash), rank < runRank,
                                let value = scalarString(kv.pointee.value)
                            {
                                run = value
                                runRank = rank
                            }
                            guard let k = indexedKeys.table.index(of: key, hash: hash),
                                let valueHash = Self.indexedHash(kv.pointee.value, key: k, indexedKeys)
                            else { continue }
                            let a = IndexedAttribute(
                                hash: valueHash, trace: traceID, resource: resourceIndex,
                                startNanos: span.start_time_unix_nano)
                            // One row per (hash, trace, resource): exactly the rows the index keeps.
                            if seenIndexed.insert(IndexedValue(hash: a.hash, trace: traceID, resource: resourceIndex))
                                .inserted
                            {
                                indexed.append(a)
                            }
                        }
                    }
                    if let rules, let resourceLabels {
                        let runID = run ?? resourceRun
                        SpanMetrics.observe(
                            span: span, values: values, resource: resourceLabels,
                            runID: {
                                // A span without a run is its trace's: the hex made once per trace.
                                if let runID { return runID }
                                if exemplarTrace != traceID {
                                    exemplarTrace = traceID
                                    exemplarTraceHex = traceID.hex
                                }
                                return exemplarTraceHex
                            }, rules: rules, into: &metrics)
                    }
                    spans.append(
                        SpanIndexEntry(
                            traceID: traceID, spanID: spanID, parentSpanID: parent,
                            startNanos: span.start_time_unix_nano, endNanos: span.end_time_unix_nano,
                            isError: span.status?.pointee.code.rawValue == 2,
                            explicitRunID: run ?? resourceRun, resource: resourceIndex))
                }
            }
        }
        // Consumed, not copied: a copy left alive here shared the tables' arrays, so resetting
        // them for the next request copied them whole (`perf`).
        let counts = (consume metrics).finish()
        return Extracted(spans: spans, indexed: indexed, resources: resources, metrics: counts)
    }

    /// `IndexedAttribute.hash` of indexed key number `key` with a scalar `value` (a non-empty
    /// string of at most 512 bytes, or an integer); nil for any other value.
    @inline(__always)
    static func indexedHash(_ value: UnsafeMutablePointer<CAnyValue>?, key: Int, _ indexedKeys: IndexedKeys) -> Int64? {
        guard let v = value?.pointee else { return nil }
        switch v.value_case.rawValue {
        case 1:
            guard let s = v.string_value, s.pointee != 0 else { return nil }
            if let h = IndexedAttribute.hash(prefix: indexedKeys.hashPrefixes[key], asciiCString: s, limit: 512) {
                return h
            }
            let text = String(cString: s)
            return text.utf8.count <= 512 ? IndexedAttribute.hash(key: indexedKeys.keys[key], value: text) : nil
        case 3: return IndexedAttribute.hash(key: indexedKeys.keys[key], value: String(v.int_value))
        default: return nil
        }
    }

    /// The facts of a serialized request or `TracesData`; nil when it does not unpack.
    public static func extract(
        _ payload: [UInt8], runIdentity: RunIdentity, indexedKeys: IndexedKeys, metrics: MetricRules? = nil
    ) -> Extracted? {
        payload.withUnsafeBytes { raw in
            UnpackArena.withRequest(raw) {
                extract($0, runIdentity: runIdentity, indexedKeys: indexedKeys, metrics: metrics)
            }
        }
    }
}
