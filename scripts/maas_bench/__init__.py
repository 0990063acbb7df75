"""maas's benchmark: served throughput and latency against the raw model and naive KServe."""
