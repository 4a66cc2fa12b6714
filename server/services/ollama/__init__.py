"""Ollama's API over our pool and the generation core (docs/api.md, "Ollama's API")."""
