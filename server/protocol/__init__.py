"""OpenAI wire types as msgspec Structs. Only msgspec and the standard library are imported here.

Request Structs tolerate unknown fields (real clients send extras) and use UNSET to tell
"not sent" from an explicit null.
"""
