"""The simulation: requests, KV block pools, the per-instance scheduler (vLLM V1's policy, with
its decode cohort and lazy heaps), the instance the event loop drives, routing, and the event loop."""
