"""The Responses API: input items -> a chat plan, the core's output -> output items and typed events, stored
responses."""
