"""tessera.tools: benchmarks, fuzzers and the plots they and the demo draw."""
