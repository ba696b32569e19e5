"""The chaos suite: real servers, real clients, real signals (docs/reliability.md)."""
