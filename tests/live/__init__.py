"""Live tests: real uvicorn server processes on loopback ports (restarts, replicas, kills, fuzzing)."""
