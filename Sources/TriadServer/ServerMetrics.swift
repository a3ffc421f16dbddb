import Prometheus

/// The registry `/metrics` exports. swift-metrics can be bootstrapped once per process, so the
/// process's entry point does it (`triad server`, the test kit) onto this registry.
public enum ServerMetrics {
    public static let registry = PrometheusCollectorRegistry()
}
