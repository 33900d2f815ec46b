import FlightRecorderMetrics
import Testing

/// A token bound to some tenants reads only their series.
@Suite struct TenantExpositionTests {
    static let text = """
        # HELP flightrec_tool_calls_total Tool calls.
        # TYPE flightrec_tool_calls_total counter
        flightrec_tool_calls_total{tenant="acme",agent="a",tool="t",outcome="ok"} 3
        flightrec_tool_calls_total{tenant="globex",agent="a",tool="t",outcome="ok"} 5
        flightrec_tool_calls_total{tenant="acme-eu",agent="a",tool="t",outcome="ok"} 7
        flightrec_tool_calls_total{otel_metric_overflow="true"} 11
        # HELP flightrec_redactions_total Redactions.
        # TYPE flightrec_redactions_total counter
        flightrec_redactions_total{tenant="globex",rule="email"} 2
        # TYPE flightrec_gen_ai_client_token_usage histogram
        flightrec_gen_ai_client_token_usage_bucket{tenant="acme",model="m",token_type="input",le="1.0"} 0
        flightrec_gen_ai_client_token_usage_bucket{tenant="acme",model="m",token_type="input",le="+Inf"} 1
        flightrec_gen_ai_client_token_usage_sum{tenant="acme",model="m",token_type="input"} 40
        flightrec_gen_ai_client_token_usage_count{tenant="acme",model="m",token_type="input"} 1
        # HELP flightrec_spans_accepted_total Spans accepted.
        # TYPE flightrec_spans_accepted_total counter
        flightrec_spans_accepted_total 99
        # HELP flightrec_approvals_total Approvals.
        # TYPE flightrec_approvals_total counter
        flightrec_approvals_total{agent="a",tenant="acme",decision="granted"} 4

        """

    @Test func onlyTheTenantsSeriesAndTheirFamilies() {
        let kept = String(decoding: TenantExposition.keeping(Array(Self.text.utf8), tenants: ["acme"]), as: UTF8.self)
        #expect(
            kept == """
                # HELP flightrec_tool_calls_total Tool calls.
                # TYPE flightrec_tool_calls_total counter
                flightrec_tool_calls_total{tenant="acme",agent="a",tool="t",outcome="ok"} 3
                # TYPE flightrec_gen_ai_client_token_usage histogram
                flightrec_gen_ai_client_token_usage_bucket{tenant="acme",model="m",token_type="input",le="1.0"} 0
                flightrec_gen_ai_client_token_usage_bucket{tenant="acme",model="m",token_type="input",le="+Inf"} 1
                flightrec_gen_ai_client_token_usage_sum{tenant="acme",model="m",token_type="input"} 40
                flightrec_gen_ai_client_token_usage_count{tenant="acme",model="m",token_type="input"} 1
                # HELP flightrec_approvals_total Approvals.
                # TYPE flightrec_approvals_total counter
                flightrec_approvals_total{agent="a",tenant="acme",decision="granted"} 4

                """)
        let two = String(
            decoding: TenantExposition.keeping(Array(Self.text.utf8), tenants: ["globex", "acme-eu"]), as: UTF8.self)
        #expect(two.contains("tenant=\"globex\",agent") && two.contains("tenant=\"acme-eu\""))
        #expect(two.contains("flightrec_redactions_total{tenant=\"globex\""))
        #expect(!two.contains("tenant=\"acme\"") && !two.contains("overflow") && !two.contains("accepted"))
        #expect(TenantExposition.keeping(Array(Self.text.utf8), tenants: []).isEmpty)
        // An admin bound to tenants also reads the daemon's own families and the overflow.
        let admin = String(
            decoding: TenantExposition.keeping(Array(Self.text.utf8), tenants: ["acme"], keepUntenanted: true),
            as: UTF8.self)
        #expect(admin.contains("flightrec_spans_accepted_total 99") && admin.contains("overflow"))
        #expect(admin.contains("# HELP flightrec_spans_accepted_total") && !admin.contains("globex"))
    }
}
