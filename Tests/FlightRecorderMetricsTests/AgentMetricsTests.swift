import FlightRecorderOTLP
import Prometheus
import Testing

@testable import FlightRecorderMetrics

@Suite struct AgentMetricsTests {
    @Test func placeholder() {}
}
