"""Runner overhead per node, and what a second run of the hybrid workflow re-executes.

    python bench/bench_runner.py [--nodes 200] [--repeats 5]

Overhead: a chain of `--nodes` nodes whose function only returns its input, run through `run_workflow`; the
time outside the node functions divided by the node count, for a first run (everything executes) and a second
run (everything cached). The hybrid part writes the demo models into a temporary STYLEBRIDGE_HOME, runs
workflows/stylegan_to_diffusion.json, then runs it again with only the diffusion seed changed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class PassThrough:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 10})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "bench"

    def run(self, value):
        return (value,)


class Sink:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "bench"

    def run(self, value):
        return {"ui": {"value": [value]}}


def chain_prompt(count: int) -> dict:
    prompt = {"0": {"class_type": "PassThrough", "inputs": {"value": 1}}}
    for index in range(1, count):
        prompt[str(index)] = {"class_type": "PassThrough", "inputs": {"value": [str(index - 1), 0]}}
    prompt["sink"] = {"class_type": "Sink", "inputs": {"value": [str(count - 1), 0]}}
    return prompt


def overhead(count: int, repeats: int) -> dict[str, float]:
    """Median seconds per node: execution outside node functions, and whole run_workflow calls."""
    from stylebridge.runtime.executor import Executor
    from stylebridge.runtime.runner import run_workflow

    registry = {"PassThrough": PassThrough, "Sink": Sink}
    samples: dict[str, list[float]] = {"first": [], "cached": [], "first_call": [], "cached_call": []}
    nodes = count + 1
    for _ in range(repeats):
        runner = Executor(registry)
        start = time.perf_counter()
        result = run_workflow(chain_prompt(count), runner=runner)
        samples["first_call"].append((time.perf_counter() - start - sum(result.timings.values())) / nodes)
        samples["first"].append((result.total_seconds - sum(result.timings.values())) / nodes)
        start = time.perf_counter()
        result = run_workflow(chain_prompt(count), runner=runner)
        samples["cached_call"].append((time.perf_counter() - start) / nodes)
        assert not result.executed, result.executed
        samples["cached"].append(result.total_seconds / nodes)
    return {key: statistics.median(values) for key, values in samples.items()}


def hybrid_rerun() -> tuple[list[str], list[str], float, float]:
    from stylebridge.models.demo import write_demo_models
    from stylebridge.runtime.executor import Executor
    from stylebridge.runtime.runner import default_registry, run_workflow

    with tempfile.TemporaryDirectory() as home:
        os.environ["STYLEBRIDGE_HOME"] = home
        write_demo_models()
        runner = Executor(default_registry())
        workflow = ROOT / "workflows" / "stylegan_to_diffusion.json"
        first = run_workflow(workflow, runner=runner)
        second = run_workflow(workflow, runner=runner, overrides={"5.seed": 8})
        return first.executed, second.executed, first.total_seconds, second.total_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200, help="Length of the node chain (default 200).")
    parser.add_argument("--repeats", type=int, default=5, help="Runs per measurement; the median is shown.")
    args = parser.parse_args()

    result = overhead(args.nodes, args.repeats)
    print(f"Runner overhead, chain of {args.nodes} pass-through nodes, median of {args.repeats} runs")
    print("| run | execution, per node | whole run_workflow call (conversion, validation, execution), per node |")
    print("|---|---|---|")
    print(f"| first (all nodes execute) | {result['first'] * 1e3:.3f} ms | {result['first_call'] * 1e3:.3f} ms |")
    print(f"| second (all nodes cached) | {result['cached'] * 1e3:.3f} ms | {result['cached_call'] * 1e3:.3f} ms |")

    executed_first, executed_second, seconds_first, seconds_second = hybrid_rerun()
    print("\nHybrid workflow on the demo models, second run with only DiffusionSample's seed changed")
    print("| run | executed nodes | seconds |")
    print("|---|---|---|")
    print(f"| first | {', '.join(executed_first)} | {seconds_first:.2f} |")
    print(f"| second | {', '.join(executed_second)} | {seconds_second:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
