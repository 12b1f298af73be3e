"""Human-readable views of pipeline evaluations: an HTML report and the review notebook's helpers."""
