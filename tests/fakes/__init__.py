"""In-memory stand-ins for engines (the Runtime protocol), for tests that need no engine."""
