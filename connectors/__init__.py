"""Search backends: the embedded default (SQLite + numpy + BM25) and OpenSearch."""
