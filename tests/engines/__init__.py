"""Real search-engine nodes for the tests: assembled from Maven Central, run unprivileged."""
