"""Where chatd keeps what outlives a connection: SQLite on one server, Redis for a cluster."""
