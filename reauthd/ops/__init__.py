"""Operations: systemd notification, health model and probes, Prometheus metrics, container health check."""
