"""HTTP routes: /v1 and the seed-compatible shapes."""
