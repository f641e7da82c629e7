"""Executors run a staged job: `native` (a local process group) and `docker` (a container)."""
