"""BEIR-style evaluation: run a method over a dataset and score it with ir-measures."""
