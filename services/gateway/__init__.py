"""HTTP gateway: validates, authenticates, records, publishes commands; never runs models."""
