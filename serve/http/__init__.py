"""The HTTP layer: OpenAI-style schemas, error mapping, Prometheus metrics and the Ray Serve app."""
