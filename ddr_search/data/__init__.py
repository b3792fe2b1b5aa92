"""Readers for the files users give us (BEIR folders, document JSONL), with errors that name file and line."""
