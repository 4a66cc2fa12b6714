"""Where a greedy answer is a near tie: each generated token with the gap (in nats) to the runner-up.

Issue 27's audit tool. Runs a chat request (JSON on stdin or as an argument) against a running server
with logprobs, and prints the tokens up to the first gap under --threshold, or every token with --all:

    python scripts/margins.py --base http://127.0.0.1:8000 '{"model": "smollm2", "messages": [...]}'
"""

from __future__ import annotations

import argparse
import json
import sys

import httpx


def margins(base: str, request: dict) -> list[tuple[str, float]]:
    body = {**request, "logprobs": True, "top_logprobs": 2, "stream": False}
    reply = httpx.post(base + "/v1/chat/completions", json=body, timeout=120)
    reply.raise_for_status()
    content = reply.json()["choices"][0]["logprobs"]["content"] or []
    out = []
    for entry in content:
        top = entry["top_logprobs"]
        gap = top[0]["logprob"] - top[1]["logprob"] if len(top) > 1 else float("inf")
        out.append((entry["token"], gap))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("request", nargs="?", help="the chat request as JSON (default: stdin)")
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--threshold", type=float, default=1.0)
    parser.add_argument("--all", action="store_true", help="print every token, not only up to the first tie")
    args = parser.parse_args()
    request = json.loads(args.request if args.request else sys.stdin.read())
    text = ""
    for token, gap in margins(args.base, request):
        text += token
        flag = "  <-- near tie" if gap < args.threshold else ""
        print(f"{gap:7.2f}  {token!r}{flag}")
        if flag and not args.all:
            break
    print("text:", repr(text))


if __name__ == "__main__":
    main()
