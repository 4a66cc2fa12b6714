"""The HTTP edge: keys, the error envelope, request observing, OpenAPI, JSON bodies and SSE framing."""
