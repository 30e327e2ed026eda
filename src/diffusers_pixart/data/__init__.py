"""Data: streaming datasets, aspect-ratio buckets, features."""
