"""TEST SCAFFOLDING for the version controller's tests: fake Kubernetes API server, fake KServe
status updates, fake Prometheus, virtual clock. None of it is part of the product."""
