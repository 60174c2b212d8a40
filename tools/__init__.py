"""tessera.tools: benchmarks and plots."""
