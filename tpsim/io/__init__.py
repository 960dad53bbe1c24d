"""File formats: traces in, per-request CSV and run summary out."""
