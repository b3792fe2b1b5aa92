"""Lexical retrieval (BM25) shared by the embedded backend and the evaluation harness."""
