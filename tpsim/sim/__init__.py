"""Entities (requests, KV cache), the per-instance scheduler, routing and the event loop."""
