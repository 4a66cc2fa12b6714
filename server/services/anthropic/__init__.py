"""Anthropic's Messages API: messages -> a chat plan, the core's output -> content blocks and named events."""
