"""The `stylebridge run`, `validate` and `convert-workflow` commands.

Exit codes: 0 success, 1 a node failed while running, 2 the workflow could not be read, converted or
validated (nothing ran, nothing was written), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TextIO

from .executor import ExecutionEvent, NodeExecutionError
from .runner import (
    OverrideError,
    WorkflowInterrupted,
    default_display_names,
    default_registry,
    prepare_prompt,
    run_workflow,
)
from .validation import WorkflowValidationError, check_prompt
from .workflow import WorkflowFormatError, detect_format, load_workflow, ui_to_api

EXIT_OK = 0
EXIT_NODE_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the run, validate and convert-workflow subcommands to the `stylebridge` parser."""
    run = subparsers.add_parser(
        "run", help="Run a ComfyUI workflow (UI or API format) without ComfyUI.",
        description="Run a ComfyUI workflow headless. The whole workflow is validated first; if it is invalid, "
                    "nothing runs and the exit code is 2.")
    _add_workflow_arguments(run)
    run.add_argument("--output-dir", type=Path, metavar="DIR",
                     help="Folder for saved images (default: $STYLEBRIDGE_HOME/output).")
    run.add_argument("--json", action="store_true",
                     help="Print the result (outputs, saved files, executed and cached node ids, timings) as JSON.")
    run.set_defaults(handler=run_command)

    validate = subparsers.add_parser(
        "validate", help="Validate a workflow without running it.",
        description="Convert and validate a workflow; exit code 0 when it can run, 2 when it cannot.")
    _add_workflow_arguments(validate)
    validate.set_defaults(handler=validate_command)

    convert = subparsers.add_parser(
        "convert-workflow", help="Convert a UI workflow to the API format.",
        description="Convert a workflow saved by the ComfyUI editor to the API prompt format.")
    convert.add_argument("workflow", help="UI workflow .json file.")
    convert.add_argument("-o", "--output", type=Path, metavar="API.json",
                         help="Where to write the API prompt (default: print it).")
    convert.set_defaults(handler=convert_command)


def _add_workflow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", help="Workflow .json file (UI or API format), or a PNG saved by SaveImage.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                        help="Set a node input before running (repeatable). NODE_ID may also be a node title or "
                             "class name that exactly one node has. "
                             "VALUE is read as JSON when it parses (42, 1.5, true), else as text.")


def _parse_overrides(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise OverrideError(f"--set {item!r} must have the form NODE_ID.INPUT=VALUE, for example --set 3.seed=42.")
        overrides[key.strip()] = value
    return overrides


class ProgressPrinter:
    """Prints one line per node and a step counter to a stream (stderr by default)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.total = 0
        self.index = 0
        self.step_line_open = False

    def __call__(self, event: ExecutionEvent) -> None:
        data = event.data
        if event.type == "execution_cached":
            self.total = len(data.get("to_execute", []))
            if data.get("nodes"):
                self._line(f"{len(data['nodes'])} nodes cached: {', '.join(data['nodes'])}")
        elif event.type == "executing":
            self.index += 1
            self._line(f"[{self.index}/{self.total}] node {data['node']} {data.get('class_type', '')}")
        elif event.type == "progress":
            self._step(data["value"], data["max"])
        elif event.type == "executed":
            self._line(f"      done in {data['seconds']:.2f} s")

    def _step(self, value: int, total: int) -> None:
        text = f"      step {value}/{total}"
        if self.interactive:
            self.stream.write("\r" + text)
            self.stream.flush()
            self.step_line_open = True
        elif total <= 20 or value == total or value % max(total // 10, 1) == 0:
            self._line(text)

    def _line(self, text: str) -> None:
        if self.step_line_open:
            self.stream.write("\n")
            self.step_line_open = False
        print(text, file=self.stream, flush=True)


def _report_invalid(exc: Exception, as_json: bool) -> int:
    print(str(exc), file=sys.stderr)
    if as_json and isinstance(exc, WorkflowValidationError):
        print(json.dumps(exc.response, indent=2, default=repr))
    return EXIT_INVALID


class _DropNodeFailureLog(logging.Filter):
    """Drop the executor's log line for a failed node; run_command prints that failure itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "node_failure", False)


def run_command(args: argparse.Namespace) -> int:
    executor_logger = logging.getLogger(NodeExecutionError.__module__)
    failure_filter = _DropNodeFailureLog()
    executor_logger.addFilter(failure_filter)
    try:
        return _run(args)
    finally:
        executor_logger.removeFilter(failure_filter)


def _run(args: argparse.Namespace) -> int:
    try:
        overrides = _parse_overrides(args.overrides)
        result = run_workflow(args.workflow, overrides=overrides, output_dir=args.output_dir,
                              progress=ProgressPrinter())
    except (WorkflowValidationError, WorkflowFormatError, OverrideError, FileNotFoundError) as exc:
        return _report_invalid(exc, args.json)
    except NodeExecutionError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"execution_error": exc.details}, indent=2, default=repr))
        return EXIT_NODE_FAILED
    except (WorkflowInterrupted, KeyboardInterrupt):
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError) as exc:
        # A malformed workflow that the conversion did not anticipate; node failures are NodeExecutionError.
        print(f"Invalid workflow {args.workflow}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INVALID

    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=repr))
        return EXIT_OK
    print(f"Ran {len(result.executed)} nodes in {result.total_seconds:.2f} s.", file=sys.stderr)
    for path in result.saved_files:
        print(path)
    if not result.saved_files:
        print("No files were saved.", file=sys.stderr)
    return EXIT_OK


def validate_command(args: argparse.Namespace) -> int:
    try:
        registry = default_registry()
        prepared = prepare_prompt(args.workflow, overrides=_parse_overrides(args.overrides), registry=registry,
                                  display_names=default_display_names())
        validation = check_prompt(prepared.prompt, registry)
    except (WorkflowValidationError, WorkflowFormatError, OverrideError, FileNotFoundError) as exc:
        return _report_invalid(exc, False)
    print(f"Valid {prepared.source_format.upper()} workflow: {len(prepared.prompt)} nodes, output nodes "
          f"{', '.join(validation.outputs)}.")
    return EXIT_OK


def convert_command(args: argparse.Namespace) -> int:
    try:
        data = load_workflow(args.workflow)
        if detect_format(data) == "api":
            print(f"{args.workflow} is already in the API format; nothing to convert.", file=sys.stderr)
            return EXIT_INVALID
        prompt = ui_to_api(data, default_registry(), default_display_names())
    except (WorkflowValidationError, WorkflowFormatError, FileNotFoundError) as exc:
        return _report_invalid(exc, False)
    text = json.dumps(prompt, indent=2)
    if args.output is None:
        print(text)
    else:
        try:
            with open(args.output, "x", encoding="utf-8") as file:
                file.write(text + "\n")
        except FileExistsError:
            print(f"{args.output} already exists; choose another output path or delete it first.", file=sys.stderr)
            return EXIT_INVALID
        print(f"Wrote {len(prompt)} nodes to {args.output}.", file=sys.stderr)
    return EXIT_OK
