"""OpenAI-compatible inference server for GGUF models."""
