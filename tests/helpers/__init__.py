"""Shared test helpers: real servers (PostgreSQL, Redis, Open-AutoGLM) on loopback."""
