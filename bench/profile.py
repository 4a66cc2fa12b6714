"""python -m bench.profile: where our server's time goes while it streams single 64-token answers.

Starts our server, attaches py-spy (`make bench` installs it in .bench/venv) to it and its granian
worker, streams sequential answers, and summarises py-spy's collapsed stacks: the share of samples per
thread, per function (self) and per function with its callees (inclusive). `--gil` keeps only samples
of the thread holding the GIL: that is the Python work per token, which competes with decoding.
py-spy reads another process's memory: it needs root or CAP_SYS_PTRACE.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.servers import ALIASES, EngineSettings, start_ours
from bench.streams import ChatWork, stream_http
from bench.workloads import client

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Summary:
    samples: int
    threads: list[tuple[str, int]]
    self_time: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]

    def text(self, top: int = 20) -> str:
        def block(title: str, rows: list[tuple[str, int]]) -> list[str]:
            return [title] + [f"  {n / self.samples:6.1%}  {name}" for name, n in rows[:top]]

        return "\n".join([f"{self.samples} samples", *block("per thread:", self.threads),
                          *block("self (the function itself):", self.self_time),
                          *block("inclusive (with callees):", self.inclusive)])


def summarise(collapsed: list[str]) -> Summary:
    """py-spy `--format raw` lines ('frame;frame;... count'), with `--threads` and `--subprocesses`."""
    total, threads, own, incl = 0, Counter[str](), Counter[str](), Counter[str]()
    for line in collapsed:
        line = line.rstrip("\n")
        if not line:
            continue
        stack, count = line.rsplit(" ", 1)
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        thread = "?"
        if frames and frames[0].startswith("thread "):
            # A new generation thread per request: the name says what it is, the id does not.
            thread = re.sub(r"^thread \([^)]*\):?\s*", "thread ", frames.pop(0)).strip()
        frames = [re.sub(r":\d+\)$", ")", f) for f in frames]  # per function, not per line
        total += n
        threads[thread] += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    return Summary(total, threads.most_common(), own.most_common(), incl.most_common())


def py_spy() -> str:
    local = ROOT / ".bench" / "venv" / "bin" / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy is missing: run `make bench` (it installs it in .bench/venv)")
    return found


def main(argv: list[str] | None = None) -> int:
    import os

    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--gil", action="store_true", help="only samples holding the GIL (Python work)")
    p.add_argument("--native", action="store_true", help="C frames too (llama.cpp's own functions)")
    p.add_argument("--threads", type=int, default=max((os.cpu_count() or 1) // 2, 1))
    p.add_argument("--threads-batch", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=ROOT / ".bench" / "profile")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    args.out.mkdir(parents=True, exist_ok=True)
    engine = EngineSettings(model=(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf").resolve(), n_ctx=2048,
                            n_threads=args.threads, n_threads_batch=args.threads_batch)
    kind = ("gil" if args.gil else "wall") + ("-native" if args.native else "")
    raw = args.out / f"ours-{kind}.txt"
    raw.unlink(missing_ok=True)
    server = start_ours(sys.executable, ROOT, args.out, engine)
    work = ChatWork()

    async def stream(n: int) -> list[float]:
        async with client() as http:
            results = [await stream_http(http, "ours", server.base_url, ALIASES[0], work) for _ in range(n)]
        return [len(r.token_times) / r.seconds for r in results if r.seconds > 0]

    try:
        asyncio.run(stream(3))  # warm-up, not profiled
        command = [py_spy(), "record", "--pid", str(server.pid), "--subprocesses", "--threads",
                   "--rate", str(args.rate), "--format", "raw", "--output", str(raw)]
        command += ["--gil"] if args.gil else []
        # Native stacks need the process paused per sample; otherwise sample without pausing it.
        command += ["--native"] if args.native else ["--nonblocking"]
        spy_log = (args.out / f"py-spy-{kind}.log").open("wb")
        spy = subprocess.Popen(command, stdout=spy_log, stderr=subprocess.STDOUT)
        time.sleep(2)  # attached before the first request
        rates = asyncio.run(stream(args.requests))
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        spy.wait(timeout=60)
    finally:
        server.stop()
    if not raw.exists():
        print(f"py-spy wrote no profile; its output:\n{(args.out / f'py-spy-{kind}.log').read_text()}", file=sys.stderr)
        return 1
    summary = summarise(raw.read_text().splitlines())
    text = (f"py-spy {kind} profile of our server, {args.requests} sequential 64-token streams, "
            f"median {sorted(rates)[len(rates) // 2]:.1f} tokens/s while sampled\n" + summary.text())
    (args.out / f"ours-{kind}-summary.txt").write_text(text + "\n")
    print(text)
    print(f"\nraw stacks: {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
