"""Goodhart Gap evaluation: task families, probes, scoring, metrics, statistics."""
