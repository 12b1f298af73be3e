"""Canary releases, the `fmnist release` operations: labels (stable/canary in a model config
file, promotion gates), vertex_traffic (a Vertex AI endpoint's traffic split), canary_analysis
and vertex_canary (measure a canary and decide). Reaches a server through serving.client only."""
