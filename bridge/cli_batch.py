"""``bridge batch`` and ``bridge cache``: many models at once, and the conversion cache.

Thin, like bridge.cli (which registers these commands): the plan is read by bridge.batch_plan,
run by bridge.batch on an executor of bridge.executors, and the cache is bridge.cache.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from bridge import cli_params
from bridge.cli import SUB_CONTEXT, _common, _one_stdout, _reports, _user_errors, _write_text
from bridge.cli_output import setup_logging
from bridge.errors import InputError, OutputError


@click.command(context_settings=SUB_CONTEXT)
@click.argument("plan", required=False, type=click.Path(path_type=Path))
@click.option("--zoo", "zoo", is_flag=True, help="Run the zoo: every model to every target it reaches (not the slow ones).")
@click.option("--slow", is_flag=True, help="With --zoo: the slow models too (torchvision, keras.applications).")
@click.option("--to", "to", help="Targets for every model (a directory of models needs it; overrides a plan's).")
@click.option("--select", metavar="NAMES", help="Run only these jobs (comma-separated names).")
@click.option("-o", "--output", "--out", "output", type=click.Path(path_type=Path),
              help="Output folder (default: PLAN.batch beside the plan, zoo.batch for --zoo).")
@click.option("--executor", type=click.Choice(["pool", "ray"]), default="pool", show_default=True,
              help="pool: processes on this machine; ray: Ray tasks (pip install 'bridge[ray]').")
@click.option("-j", "--jobs", type=click.IntRange(min=1),
              help="Jobs at once on the pool (default: from cores and memory); for ray, the local cluster's cores.")
@click.option("--address", help="Ray: the cluster to join (ray://HOST:10001 or HOST:6379); default: a local one.")
@click.option("--ray-cpus", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Ray: cores each job asks for.")
@click.option("--ray-memory", metavar="SIZE", help="Ray: memory each job asks for (default 3GB).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds each job may take (overrides the plan's).")
@click.option("--rerun", is_flag=True, help="Run every job, even those done before with the same inputs.")
@click.option("--trust-factory", "trust_factory", multiple=True, metavar="PACKAGE.MODULE:FACTORY",
              help="Let the plan build this factory (runs its code); repeatable.")
@click.option("--trust-pickle", is_flag=True, help="Every job may load pickled PyTorch modules (runs code from the files).")
@click.option("--trust-code", is_flag=True, help="Every job may load Keras Lambda layers (runs code from the files).")
@_reports("batch report")
@_common
def batch(plan: Path | None, zoo: bool, slow: bool, to: str | None, select: str | None, output: Path | None,
          executor: str, jobs: int | None, address: str | None, ray_cpus: float, ray_memory: str | None,
          timeout: float | None, rerun: bool, trust_factory: tuple[str, ...], trust_pickle: bool, trust_code: bool,
          json: Path | None, junit: Path | None,
          markdown: Path | None, verbose: int, quiet: bool, debug: bool) -> None:
    """Verify many models against their targets: a PLAN file (YAML/JSON), a directory of models, or --zoo.

    Each job is `bridge verify MODEL --to TARGETS` in processes of its own; one that crashes or
    times out is that job's error and the rest go on. Running the same plan again skips the jobs
    done before with the same model bytes, options and tool versions. Exit code: 0 every job
    verified, 1 any drift, 2 any error. docs/batch.md has the plan's keys.

    \b
    Examples:
      bridge batch models.yaml
      bridge batch models/ --to onnx,tflite -j 2
      bridge batch --zoo -o zoo.batch --junit zoo.xml
      bridge batch models.yaml --executor ray --address ray://head:10001
    """
    setup_logging(verbose, quiet)
    with _user_errors(debug):
        from bridge.batch import run_batch
        from bridge.batch_plan import read_plan, zoo_jobs
        from bridge.batch_plan import select as only
        from bridge.executors import executor_for
        from bridge.memory import parse_size

        to_stderr = _one_stdout(json, junit, markdown)
        if zoo == (plan is not None):
            raise InputError("give a PLAN (a plan file or a directory of models) or --zoo, not both or neither")
        if slow and not zoo:
            raise InputError("--slow selects the zoo's slow models; add --zoo")
        if zoo:
            if to:
                raise InputError("--to with --zoo: the zoo runs each model to the targets it reaches; give a plan instead")
            planned, origin = zoo_jobs(slow=slow, timeout=timeout), "zoo"
            out = output or Path("zoo.batch")
        else:
            assert plan is not None
            planned, origin = read_plan(plan, to=to, trusted=trust_factory, timeout=timeout), str(plan)
            out = output or plan.resolve().parent / f"{plan.name if plan.is_dir() else plan.stem}.batch"
        planned = only(planned, select)
        trusting = (*(["--trust-pickle"] if trust_pickle else []), *(["--trust-code"] if trust_code else []))
        planned = [replace(job, flags=(*job.flags, *trusting)) for job in planned]
        _check_output(out.resolve())
        runner = executor_for(executor, jobs=jobs, address=address, cpus=ray_cpus,
                              memory=parse_size(ray_memory, "--ray-memory") if ray_memory else None)

        def say(line: str) -> None:
            if not quiet:
                click.echo(line, err=True)

        report = run_batch(planned, out.resolve(), runner, plan=origin, progress=say, rerun=rerun)
        for path, kind in zip((json, junit, markdown), ("json", "junit", "markdown"), strict=True):
            if path is not None:
                _write_text(path, report.render(kind))
        if not quiet or report.exit_code:
            from bridge.batch_report import table

            for line in table(report):
                click.echo(line, err=to_stderr)
        sys.exit(report.exit_code)


def _check_output(out: Path) -> None:
    """An output folder is new, empty, or one `bridge batch` made (then its done jobs are kept and reused)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another -o")
    if out.is_dir() and any(out.iterdir()) and not (out / "jobs").is_dir():
        raise OutputError(f"{out}: a folder that bridge batch did not make; choose another -o (nothing was written)")


@click.group(context_settings=SUB_CONTEXT)
def cache() -> None:
    """The conversion cache: a convert done before with the same bytes, options and tools is a copy.

    \b
    Examples:
      bridge cache info
      bridge cache prune --max-size 20GB --older-than 30d
      bridge cache clear
      BRIDGE_CACHE_DIR=/shared/bridge-cache bridge convert model.pt2 --to tflite
      BRIDGE_CACHE_MAX_SIZE=20GB bridge convert model.pt2 --to tflite
    """


def _location(cache_dir: Path | None) -> Any:
    from bridge.cache import ConversionCache, default_location

    return ConversionCache(cache_dir or default_location())


@cache.command("info", context_settings=SUB_CONTEXT)
@click.option("--cache-dir", "cache_dir", type=click.Path(path_type=Path), help="The cache (default: BRIDGE_CACHE_DIR or ~/.cache/bridge).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write it as JSON to PATH, or - for stdout.")
def cache_info(cache_dir: Path | None, json_path: Path | None) -> None:
    """Where the cache is, how many conversions it holds and their size."""
    import json
    import time

    from bridge.cache import disabled_by_environment, max_size_from_environment
    from bridge.memory import human

    with _user_errors(False):
        limit = max_size_from_environment()
    info = _location(cache_dir).info()
    if json_path is not None:
        _write_text(json_path, json.dumps({**info.to_json(), "max_bytes": limit}, indent=2) + "\n")
        if str(json_path) == "-":
            return
    click.echo(f"location: {info.location}" + (" (off: BRIDGE_NO_CACHE is set)" if disabled_by_environment() else ""))
    click.echo(f"entries:  {info.entries}")
    click.echo(f"size:     {human(info.bytes)}" + (f" (at most {human(limit)}: BRIDGE_CACHE_MAX_SIZE)" if limit else ""))
    if info.newest is not None and info.oldest is not None:
        click.echo(f"used:     {time.strftime('%Y-%m-%d %H:%M', time.localtime(info.oldest))} .. "
                   f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(info.newest))}")


@cache.command("clear", context_settings=SUB_CONTEXT)
@click.option("--cache-dir", "cache_dir", type=click.Path(path_type=Path), help="The cache (default: BRIDGE_CACHE_DIR or ~/.cache/bridge).")
def cache_clear(cache_dir: Path | None) -> None:
    """Remove every conversion in the cache."""
    store = _location(cache_dir)
    removed = store.clear()
    click.echo(f"removed {removed} cached conversion{'s' if removed != 1 else ''} from {store.location}")


@cache.command("prune", context_settings=SUB_CONTEXT)
@click.option("--cache-dir", "cache_dir", type=click.Path(path_type=Path), help="The cache (default: BRIDGE_CACHE_DIR or ~/.cache/bridge).")
@click.option("--max-size", "max_size", type=cli_params.Size(),
              help="Remove the least recently used conversions until the rest take at most SIZE (20GB, 512MB; "
                   "default: BRIDGE_CACHE_MAX_SIZE).")
@click.option("--older-than", "older_than", type=cli_params.Age(), help="Remove the conversions unused for longer than AGE (30d, 12h, 2w).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write what was removed as JSON to PATH, or - for stdout.")
def cache_prune(cache_dir: Path | None, max_size: int | None, older_than: float | None, json_path: Path | None) -> None:
    """Remove the least recently used conversions, or those unused for too long.

    A cache hit counts as a use. Unfinished writes left by a run that died a day or more ago go too.
    """
    import json

    from bridge.cache import max_size_from_environment
    from bridge.memory import human

    with _user_errors(False):
        if max_size is None:
            max_size = max_size_from_environment()
        if max_size is None and older_than is None:
            raise InputError("bridge cache prune: give --max-size SIZE, --older-than AGE or both "
                             "(or set BRIDGE_CACHE_MAX_SIZE); 'bridge cache clear' removes everything")
        store = _location(cache_dir)
        pruned = store.prune(max_bytes=max_size, older_than=older_than)
        if json_path is not None:
            _write_text(json_path, json.dumps({"location": str(store.location), **pruned.to_json()}, indent=2) + "\n")
            if str(json_path) == "-":
                return
        click.echo(f"removed {pruned.removed} cached conversion{'s' if pruned.removed != 1 else ''} "
                   f"({human(pruned.freed)}) from {store.location}; {pruned.kept} left ({human(pruned.kept_bytes)})")
