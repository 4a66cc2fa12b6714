"""python -m bench: our server against direct in-process `Llama` calls, `python -m llama_cpp.server`
and llama.cpp's own llama-server, with the same engine settings; then every contender at its own
defaults (bench/defaults.py). `--only sweep`: ours with every n_threads / n_threads_batch (bench/sweep.py).

Runs in the product venv (ours and the direct calls use it); llama-cpp-python's server runs from its own
venv (`--baseline-python`, `make bench` builds it under .bench/venv) so that its FastAPI dependencies
never land in the product's. Prints the tables, writes everything to --out (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import loadgen, report
from bench.constrained import ConstrainedPlan, run_constrained
from bench.defaults import DefaultsOutcome, DefaultsPlan, run_defaults, step
from bench.servers import (
    ALIASES,
    CALLERS_TUNABLES,
    LLAMA_CPP,
    EngineSettings,
    ServerProcess,
    start_llama_cpp_server,
    start_llama_server,
    start_ours,
)
from bench.speculative import SpeculativePlan, run_speculative
from bench.streams import ChatWork
from bench.summary import DIRECT, summarise
from bench.swap import SwapPlan, run_swap
from bench.sweep import SweepPlan, run_sweep
from bench.workloads import (
    Collected,
    Contender,
    Plan,
    alternating,
    client,
    concurrent_one_alias,
    single_stream,
    two_aliases_at_once,
    warm_up,
)
from server.engine.process import HUGE_PAGES_TUNABLE, worker_env
from server.engine.worker.compute_lock import usable_cores

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    p.add_argument("--n-ctx", type=int, default=2048)
    # llama-cpp-python's own defaults, written out so that every contender gets exactly the same.
    p.add_argument("--threads", type=int, default=max(cores // 2, 1), help="n_threads (default: half the cores)")
    p.add_argument("--threads-batch", type=int, default=cores, help="n_threads_batch (default: all cores)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--ban-eos", action="store_true",
                   help="also send logit_bias -100 for the end-of-turn token ids (the prompt already never ends early)")
    p.add_argument("--baseline-python", default=str(ROOT / ".bench" / "venv" / "bin" / "python"),
                   help="a Python with llama-cpp-python[server] installed; 'none' skips that baseline")
    p.add_argument("--slots", type=int, default=4, help="our n_parallel and llama-server's --parallel")
    p.add_argument("--llama-server", default=str(ROOT / ".cache" / "llama-server" / "build" / "bin" / "llama-server"),
                   help="llama.cpp's server binary (scripts/build_llama_server.py builds it); 'none' skips it")
    p.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run, not numbers to publish")
    p.add_argument("--only", default="all",
                   choices=("all", "equal", "defaults", "constrained", "speculative", "swap", "sweep"),
                   help="equal: the same settings for everyone; defaults: each at its own defaults (issue 11); "
                        "constrained: grammar-constrained answers against free ones (issue 28); "
                        "speculative: repeated and unique text, drafts on and off, llama-server's n-gram "
                        "modes (issue 32); swap: the next turn after an eviction, prompt store on and off (issue 31); "
                        "sweep: ours with every n_threads / n_threads_batch pair (not part of all)")
    p.add_argument("--min-streams", type=int,
                   help="at defaults: at least this many streams per contender in every cell, in more rounds "
                        "where a round has fewer (default 20, --quick 4)")
    p.add_argument("--rounds", type=int, help="at defaults and sweep: rounds per cell (default 2, --quick 1)")
    p.add_argument("--streams", help="at defaults and sweep: streams sent at once, comma separated "
                                     "(default 1,4,16; sweep 4)")
    p.add_argument("--prompts", help="at defaults and sweep: prompt kinds, comma separated "
                                     "(default unique,shared,seeded; sweep unique,shared)")
    p.add_argument("--sweep-threads", help="sweep: thread counts, each for n_threads and n_threads_batch, comma "
                                           "separated (default 1 to the cores this process may run on, "
                                           f"{usable_cores()})")
    p.add_argument("--embed-requests", type=int, help="at defaults: embedding requests per client and round")
    p.add_argument("--models-seconds", type=float, help="at defaults: seconds of each wrk run on GET /v1/models")
    p.add_argument("--out", type=Path, default=ROOT / ".bench" / "results.json")
    return p.parse_args(argv)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def load_average() -> list[float]:
    try:
        return list(os.getloadavg())
    except OSError:
        return []


def open_direct(engine: EngineSettings) -> Any:
    import llama_cpp

    return llama_cpp.Llama(model_path=str(engine.model), n_ctx=engine.n_ctx, n_threads=engine.n_threads,
                           n_threads_batch=engine.n_threads_batch, n_batch=engine.n_batch,
                           use_mmap=engine.use_mmap, verbose=False)


def with_huge_pages(argv: list[str]) -> None:
    """The direct call runs in this process, so this process starts with the huge-pages request our
    workers get (glibc reads it at start-up): restart with it once, keeping the caller's own value for
    the contenders that run as a user starts them (bench/servers.py, `user_env`)."""
    if CALLERS_TUNABLES in os.environ or HUGE_PAGES_TUNABLE in os.environ.get("GLIBC_TUNABLES", ""):
        return
    env = {**worker_env(os.environ), CALLERS_TUNABLES: os.environ.get("GLIBC_TUNABLES", "")}
    os.execve(sys.executable, [sys.executable, "-m", "bench", *argv], env)


def count_tokens(collected: Collected, llm: Any) -> None:
    """Every answer's length with the model's own tokenizer: the same count for every contender,
    whatever a server packs into one SSE event."""
    for result in collected.streams():
        text = result.text.encode("utf-8")
        result.tokens = len(llm.tokenize(text, add_bos=False, special=False)) if text else 0


async def run(args: argparse.Namespace, engine: EngineSettings, work: ChatWork, plan: Plan,
              servers: list[ServerProcess], direct: Any) -> Collected:
    contenders = [Contender(s.name, s.base_url) for s in servers]
    # llama-server serves one model: it takes part where one alias is enough.
    by_alias = [c for c in contenders if c.name != LLAMA_CPP]
    collected = Collected()
    async with client() as http:
        step("warm-up (excluded)")
        await warm_up(http, contenders, direct, work, ALIASES, plan.warmup)
        step(f"single stream: {plan.single_rounds} rounds")
        await single_stream(http, contenders, direct, work, ALIASES[0], plan.single_rounds, collected)
        step(f"{plan.concurrent_streams} streams at once on one alias: {plan.concurrent_rounds} rounds")
        await concurrent_one_alias(http, contenders, work, ALIASES[0], plan.concurrent_streams,
                                   plan.concurrent_rounds, collected)
        step(f"two aliases alternating vs one alias: {plan.alternating_rounds} rounds")
        await alternating(http, by_alias, work, ALIASES, plan.alternating_requests, plan.alternating_rounds,
                          collected)
        step(f"two aliases, {plan.two_alias_clients} clients each: {plan.two_alias_rounds} rounds")
        await two_aliases_at_once(http, by_alias, work, ALIASES, plan.two_alias_clients, plan.two_alias_rounds,
                                  collected)
    for server in servers:
        step(f"GET /v1/models on {server.name}: {plan.models_seconds:.0f} s")
        url = server.base_url + "/v1/models"
        loadgen.measure(url, seconds=1, connections=plan.models_connections)  # warm-up
        result = loadgen.measure(url, seconds=plan.models_seconds, connections=plan.models_connections)
        collected.models[server.name] = vars(result)
    return collected


def equal_settings(args: argparse.Namespace, out_dir: Path) -> tuple[str, dict[str, Any], bool]:
    """The equal-settings table: every contender given the same engine settings."""
    engine = EngineSettings(model=args.model.resolve(), n_ctx=args.n_ctx, n_threads=args.threads,
                            n_threads_batch=args.threads_batch, slots=args.slots)
    work = ChatWork(max_tokens=args.max_tokens, ban_end_of_turn=(0, 2, 4) if args.ban_eos else ())
    plan = Plan(single_rounds=4, concurrent_rounds=1, alternating_rounds=1, two_alias_rounds=1,
                models_seconds=2) if args.quick else Plan()
    servers: list[ServerProcess] = []
    direct = None
    try:
        step("starting our server")
        servers.append(start_ours(sys.executable, ROOT, out_dir, engine))
        if args.baseline_python != "none":
            step("starting llama_cpp.server")
            servers.append(start_llama_cpp_server(args.baseline_python, ROOT, out_dir, engine))
        if args.llama_server != "none":
            step("starting llama-server")
            servers.append(start_llama_server(Path(args.llama_server), ROOT, out_dir, engine))
        step("loading the model in process (direct baseline)")
        direct = open_direct(engine)
        collected = asyncio.run(run(args, engine, work, plan, servers, direct))
        count_tokens(collected, direct)
    finally:
        if direct is not None:
            direct.close()
        for server in servers:
            server.stop()

    rows, checks, details = summarise(collected, work.max_tokens, ALIASES)
    lines = ["Same engine settings for every contender: " + ", ".join(f"{k} {v}" for k, v in vars(engine).items()
                                                                    if k != "model"), "",
             report.table(rows, checks)]
    paired = {k: v for k, v in details.get("single_stream", {}).get("ours", {}).items() if k.startswith("paired")}
    for key, value in paired.items():
        lines.append(f"- single stream, median of per-round ratios ours/{key.removeprefix('paired_ratio_vs_')}: "
                     f"{value:.2f}x")
    document = report.to_json(
        rows, checks,
        settings={"engine": {k: str(v) for k, v in vars(engine).items()}, "request": work.body(ALIASES[0]),
                  "plan": vars(plan), "contenders": [s.name for s in servers] + [DIRECT]},
        details=details,
    )
    # A truncated stream or aliases that take turns is a bug, whatever the load; a ratio below its
    # target on a busy machine is a number to look at, so it is reported, not failed.
    return "\n".join(lines), document, all(c.ok for c in checks)


def at_defaults(args: argparse.Namespace, out_dir: Path) -> DefaultsOutcome:
    import llama_cpp

    plan = DefaultsPlan(
        rounds=args.rounds or (1 if args.quick else 2),
        min_streams=args.min_streams if args.min_streams is not None else (4 if args.quick else 20),
        kinds=_kinds(args.prompts, "unique,shared,seeded"),
        counts=_numbers(args.streams, "1,4,16"),
        embed_requests=(2 if args.quick else 4) if args.embed_requests is None else args.embed_requests,
        embed_rounds=1 if args.quick else 4,
        models_seconds=args.models_seconds or (3.0 if args.quick else 5.0),
        models_runs=1 if args.quick else 2,
    )
    vocab = llama_cpp.Llama(model_path=str(args.model), vocab_only=True, verbose=False)
    try:
        llama_server = None if args.llama_server == "none" else Path(args.llama_server)
        return run_defaults(sys.executable, ROOT, out_dir, args.model.resolve(), llama_server, plan, vocab)
    finally:
        vocab.close()


def _kinds(given: str | None, default: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in (default if given is None else given).split(",") if k.strip())


def _numbers(given: str | None, default: str) -> tuple[int, ...]:
    return tuple(int(n) for n in (default if given is None else given).split(",") if n.strip())


def thread_sweep(args: argparse.Namespace, out_dir: Path) -> DefaultsOutcome:
    import llama_cpp

    every = ",".join(str(n) for n in range(1, usable_cores() + 1))
    plan = SweepPlan(values=_numbers(args.sweep_threads, every),
                     rounds=args.rounds or (1 if args.quick else 2), kinds=_kinds(args.prompts, "unique,shared"),
                     counts=_numbers(args.streams, "4"), warmup=1 if args.quick else 2)
    vocab = llama_cpp.Llama(model_path=str(args.model), vocab_only=True, verbose=False)
    try:
        return run_sweep(sys.executable, ROOT, out_dir, args.model.resolve(), plan, vocab)
    finally:
        vocab.close()


def constrained(args: argparse.Namespace, out_dir: Path) -> DefaultsOutcome:
    plan = ConstrainedPlan(rounds=args.rounds or (1 if args.quick else 3), ttft_repeats=1 if args.quick else 3,
                           counts=_numbers(args.streams, "1,4"))
    llama_server = None if args.llama_server == "none" else Path(args.llama_server)
    return run_constrained(sys.executable, ROOT, out_dir, args.model.resolve(), llama_server, plan)


def missing(args: argparse.Namespace) -> str | None:
    if not args.model.exists():
        return f"{args.model} is missing: run `make models`"
    if args.only in ("sweep", "swap"):
        return None  # ours alone
    ours_and_llama_server = ("defaults", "constrained", "speculative", "swap")
    needs_baseline = args.only not in ours_and_llama_server and args.baseline_python != "none"
    if needs_baseline and not Path(args.baseline_python).exists():
        return f"{args.baseline_python} is missing: run `make bench` (it builds that venv)"
    if args.llama_server != "none" and not Path(args.llama_server).exists():
        return f"{args.llama_server} is missing: run `make bench` (it builds llama-server once)"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.only in ("all", "equal") and argv is None:
        with_huge_pages(sys.argv[1:])
    problem = missing(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    out_dir = args.out.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    started, load_before = time.time(), load_average()
    document: dict[str, Any] = {"machine": machine()}
    texts, ok = [], True
    if args.only in ("all", "equal"):
        text, document["equal_settings"], ok = equal_settings(args, out_dir)
        texts.append(text)
    if args.only in ("all", "defaults"):
        outcome = at_defaults(args, out_dir)
        document["at_defaults"] = outcome.document
        texts.append(outcome.text)
        ok = ok and outcome.ok
    if args.only in ("all", "constrained"):
        outcome = constrained(args, out_dir)
        document["constrained"] = outcome.document
        texts.append(outcome.text)
        ok = ok and outcome.ok
    if args.only in ("all", "speculative"):
        llama_server = None if args.llama_server == "none" else Path(args.llama_server)
        outcome = run_speculative(sys.executable, ROOT, out_dir, args.model.resolve(), llama_server,
                                  SpeculativePlan(rounds=args.rounds or 1, counts=_numbers(args.streams, "1,4")))
        document["speculative"] = outcome.document
        texts.append(outcome.text)
    if args.only in ("all", "swap"):
        outcome = run_swap(sys.executable, ROOT, out_dir, args.model.resolve(),
                           SwapPlan(rounds=args.rounds or (1 if args.quick else 5)))
        document["swap"] = outcome.document
        texts.append(outcome.text)
    if args.only == "sweep":
        outcome = thread_sweep(args, out_dir)
        document["thread_sweep"] = outcome.document
        texts.append(outcome.text)
        ok = ok and outcome.ok
    document["load_average"] = {"before": load_before, "after": load_average()}
    document["seconds"] = round(time.time() - started, 1)
    print("\n\n".join(texts))
    report.write_json(args.out, document)
    print(f"\nwritten: {args.out} ({document['seconds']} s; load average before {load_before}, "
          f"after {document['load_average']['after']})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
