"""What the server tells its operators: structured logs, the access log, Prometheus metrics."""
