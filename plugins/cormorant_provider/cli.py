"""``cormorant check | run | summary``: bring your own table in minutes.

    cormorant check SPEC.yaml [--conn-file FILE | --conn URI]
    cormorant run SPEC.yaml --from 2024-03-01 --to 2024-03-07 [--stages ingest,...] [--window-days N]
                  [--train-at DAY] [--conn-file FILE]
    cormorant summary SPEC.yaml [--from DAY] [--to DAY]
    cormorant init SPEC_NAME --table TABLE --target COLUMN [--label-table TABLE [--labels-after-days K]]
                   [--conn-file FILE] [--out DIR]

Conventions follow Airflow's own CLI: a subcommand per action, ``--help`` on each, the report on stdout,
problems on stderr, exit status 0 on success, 1 when a run failed and 2 for a usage error, a malformed
spec or a warehouse that cannot be reached (then nothing is written). The warehouse connection is the
usual ``AIRFLOW_CONN_<CONN_ID>`` variable for the spec's ``source.conn_id``, or ``--conn-file`` (a file
holding the URI or Airflow's connection JSON), or ``--conn`` (a URI such as
``postgresql://user@host:5432/db``: a password there shows in ``ps`` and the shell's history, so the
command warns and the other two are the ways for one); the embedded SQLite warehouse stands in only for
the default ``cormorant_warehouse`` connection when none is set, never for one the user set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from cormorant.errors import first_line
from cormorant.spec import STAGES

EXIT_FAILED, EXIT_USAGE = 1, 2


class CliError(Exception):
    """A problem the user fixes (bad spec, no connection, unreachable warehouse): exit 2."""


def _load(path: str) -> Any:
    from cormorant.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as e:
        raise CliError(str(e)) from e


def _conn_env_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def _no_connection(conn_id: str) -> CliError:
    return CliError(
        f"no connection for {conn_id!r}: set {_conn_env_name(conn_id)}, "
        "or pass --conn-file FILE (or --conn URI)"
    )


def _conn_value(args: argparse.Namespace) -> str | None:
    """The connection the command line gives: ``--conn-file``'s content, or ``--conn`` (warning when it
    carries a password, which every user of the machine sees in ``ps``); None: the environment's."""
    if getattr(args, "conn_file", None):
        try:
            return Path(args.conn_file).read_text().strip()
        except OSError as e:
            raise CliError(f"--conn-file {args.conn_file}: {e.strerror}") from e
    uri = getattr(args, "conn", None)
    if uri and not uri.lstrip().startswith("{"):
        from urllib.parse import urlsplit

        if urlsplit(uri).password:
            print(
                "warning: --conn carries a password, which shows in `ps` and your shell's history; "
                "put the URI in a file for --conn-file, or in AIRFLOW_CONN_<CONN_ID>",
                file=sys.stderr,
            )
    return uri


def _connection(conn_id: str, uri: str | None) -> Any:
    """The warehouse connection, from --conn or AIRFLOW_CONN_<ID> (never the metadata database)."""
    from airflow.models.connection import Connection

    raw = uri or os.environ.get(_conn_env_name(conn_id))
    if not raw:
        raise _no_connection(conn_id)
    # Hooks look their connection up by id: this process's own AIRFLOW_CONN_<ID> is where they find it.
    os.environ[_conn_env_name(conn_id)] = raw
    try:
        if raw.lstrip().startswith("{"):
            return Connection.from_json(raw, conn_id=conn_id)
        return Connection(conn_id=conn_id, uri=raw)
    except Exception as e:
        raise CliError(f"the connection for {conn_id!r} is not a valid URI or JSON: {first_line(e)}") from e


def _open(connection: Any) -> Any:
    """A DB-API connection, or a CliError that names the host (never the password)."""
    try:
        return connection.get_hook().get_conn()
    except Exception as e:
        port = f":{connection.port}" if connection.port else ""
        where = f"{connection.conn_type}://{connection.host or ''}{port}"
        raise CliError(
            f"cannot reach the warehouse {where} (conn_id {connection.conn_id!r}): {first_line(e)}"
        ) from e


def check(args: argparse.Namespace) -> int:
    from cormorant.source_check import check_source

    spec = _load(args.spec)
    print(f"spec {spec.name!r} ({args.spec}): valid")
    conn = _open(_connection(spec.source.conn_id, _conn_value(args)))
    try:
        report = check_source(conn, spec, sample_rows=args.sample_rows)
    finally:
        conn.close()
    for fact in report.facts:
        print(f"  {fact}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if report.problems:
        print(f"spec {spec.name!r}: {len(report.problems)} problem(s) with the source:", file=sys.stderr)
        for problem in report.problems:
            print(f"- {problem}", file=sys.stderr)
        return EXIT_USAGE
    print(f"spec {spec.name!r}: the source fits the spec")
    return 0


def _days(first: date, last: date) -> list[str]:
    if last < first:
        raise CliError(f"--to {last} is before --from {first}")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _environment(spec: Any, spec_path: Path, home: Path, uri: str | None) -> dict[str, str]:
    """The embedded default for this spec, keeping every connection the user set."""
    from cormorant.config import embedded_environment

    name = _conn_env_name(spec.source.conn_id)
    env = {
        k: v
        # the spec alone in the specs bundle: the other files of its folder are not this run's
        for k, v in embedded_environment(home, specs_dir=spec_path.parent, spec_file=spec_path).items()
        if not (k.startswith("AIRFLOW_CONN_") and k in os.environ)  # the user's win over the embedded
    }
    if uri:
        env[name] = uri
    elif name in env:
        print(f"(no {name} set: using the embedded SQLite warehouse at {home / 'warehouse.db'})")
    elif name not in os.environ:
        raise _no_connection(spec.source.conn_id)
    return env


def run(args: argparse.Namespace) -> int:
    spec_path = Path(args.spec).resolve()
    spec = _load(args.spec)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise CliError(f"--stages: unknown stage(s) {unknown}; expected some of {', '.join(STAGES)}")
    days = _days(args.from_, args.to)
    train_at = args.train_at.isoformat() if args.train_at else None
    if train_at and train_at not in days:
        raise CliError(f"--train-at {train_at} is not between --from {days[0]} and --to {days[-1]}")
    if train_at and "train" not in stages:
        raise CliError("--train-at needs train among --stages")
    window = args.window_days or spec.training.window_days
    if not 2 <= window <= 366:
        raise CliError(f"--window-days {window}: expected 2 to 366 days")
    final = window - spec.target.available_after_days
    if "train" in stages and not train_at and final <= spec.training.holdout_days:
        where = "--window-days" if args.window_days else f"training.window_days of {args.spec}"
        raise CliError(
            f"{where} {window}: a window ending on a day holds at most {max(final, 0)} labelled day(s) "
            f"(labels are final {spec.target.available_after_days} day(s) late), and a first training "
            f"needs more than holdout_days={spec.training.holdout_days}; widen the window"
        )
    home = Path(args.home or Path.cwd() / ".cormorant" / f"run-{spec.name}").resolve()
    env = _environment(spec, spec_path, home, _conn_value(args))
    existed = home.exists()
    os.environ.update(env)  # before Airflow is imported: it reads its configuration once
    if "ingest" in stages:  # fail before writing anything when the warehouse cannot be reached
        try:
            _open(_connection(spec.source.conn_id, None)).close()
        except CliError:
            if not existed:
                shutil.rmtree(home, ignore_errors=True)
            raise
    (home / "airflow").mkdir(parents=True, exist_ok=True)
    # The two stores, side by side: Airflow's database, and MLflow's with the spec's experiment (it
    # says whether a champion exists: the first days are scored with it)
    migrate = subprocess.Popen([sys.executable, "-m", "airflow", "db", "migrate"], stdout=subprocess.DEVNULL)
    tracking = subprocess.run(
        [sys.executable, "-m", "cormorant.tracking", str(spec_path)], capture_output=True, text=True
    )
    if migrate.wait() != 0:
        raise subprocess.CalledProcessError(migrate.returncode, migrate.args)
    if tracking.returncode != 0:
        store = os.environ.get("MLFLOW_TRACKING_URI")
        raise CliError(f"the MLflow store {store} could not be prepared:\n{tracking.stderr.strip()}")
    champion = json.loads(tracking.stdout.strip().splitlines()[-1])["champion"]

    from cormorant import ledger
    from cormorant_provider.pipeline import PipelineRunner

    compute = home / "compute.jsonl"  # the compute inside this run (cormorant.ledger)
    compute.unlink(missing_ok=True)
    os.environ[ledger.LEDGER_ENV] = str(compute)
    began = time.monotonic()
    runner = PipelineRunner.for_spec(spec.name)
    if "train" in stages:
        runner.start_trainers()  # warm while the first days are ingested and validated
    try:
        done = replay(
            runner,
            spec,
            days,
            stages,
            champion=champion,
            usable=set(_usable_days(spec)),
            window_days=window,
            train_at=train_at,
        )
    finally:
        runner.close()
    wall = time.monotonic() - began
    print()
    print(runner.summary_text())
    if done.why_no_model:
        print(done.why_no_model)
    report_time(home, runner.history, wall, compute)
    if done.failed:
        print(f"\n{len(done.failed)} run(s) did not succeed:", file=sys.stderr)
        for line in done.failed:
            print(f"- {line}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _usable_days(spec: Any) -> list[str]:
    """The days earlier runs left in this run's lake that a training window can use."""
    from cormorant.config import Settings
    from cormorant.lake import Lake
    from cormorant.sweep import usable_days

    return usable_days(spec, Lake(Settings.from_env().lake_uri))


def report_time(home: Path, history: list[Any], wall: float, compute: Path) -> None:
    """Print the pipeline's time against the compute inside it, and where the rest went; keep both in
    ``home/pipeline-time.json`` (what ``scripts/benchmark_pipeline.py`` reads)."""
    from dataclasses import asdict

    from cormorant import ledger

    runs = [asdict(run) for run in history]
    spent = ledger.time_spent(wall, runs)
    if compute.exists():
        summary = ledger.summarize(compute, wall)
        print("\n" + ledger.format_summary(summary))
    else:
        summary = {"wall_seconds": wall}
        print(f"\nPipeline time {wall:.0f} s; no compute recorded")
    print(ledger.format_time_spent(spent))
    (home / "pipeline-time.json").write_text(
        json.dumps({"compute": summary, "spent": spent, "runs": runs}, indent=2, default=str)
    )


@dataclass
class Replay:
    """What a replay did: the runs that did not succeed, the days a training succeeded on, and, when
    no model scored anything, the one line that says why."""

    failed: list[str] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    why_no_model: str | None = None


def first_training_needs(spec: Any, window_days: int) -> int:
    """Labelled days a first training waits for: the window's days whose labels can be final on its
    last day (the last ``available_after_days`` cannot), and never fewer than one day to train on
    beside the holdout."""
    return max(window_days - spec.target.available_after_days, spec.training.holdout_days + 1)


def replay(
    runner: Any,
    spec: Any,
    days: list[str],
    stages: list[str],
    *,
    champion: bool,
    usable: set[str] | frozenset[str] = frozenset(),
    window_days: int | None = None,
    train_at: str | None = None,
) -> Replay:
    """Run ``stages`` day by day as the nightly chain would.

    Each day: ingest and validate it; land the labels that became final that day (those of the day
    ``target.available_after_days`` earlier; labels that come with the features land with validation)
    and measure the performance of the day they label; score and check drift; and when drift or
    performance signals retraining, train on the window ending that day, then score and check it again.

    The first model: with ``train_at``, trained on that day's window whatever the lake holds; else as
    soon as the window ending the day (``window_days``, default the spec's) holds enough labelled days
    (:func:`first_training_needs`), counting ``usable``, the days earlier runs left in the lake.
    Days before it are landed, not scored. Every training of the run uses that window.
    """
    result = Replay()
    lag = spec.target.available_after_days
    window = window_days or spec.training.window_days
    needs = first_training_needs(spec, window)
    labelled = set(usable)
    trained = champion
    tried_first = False

    def stage(name: str, day: str, conf: dict[str, Any] | None = None) -> Any:
        if name not in stages or (name == "labels" and spec.labels_inline):
            return None
        outcome = runner.run(name, day, conf, check=False)
        if not outcome.succeeded:
            result.failed.append(f"{outcome.dag_id} {day}: {outcome.state} ({outcome.describe_failure()})")
        return outcome

    def succeeded(outcome: Any, task: str) -> bool:
        return outcome is not None and outcome.task_states.get(task) == "success"

    def land(day: str, outcome: Any) -> None:
        if outcome is None:
            return
        if succeeded(outcome, "validate_labels"):
            labelled.add(day)
        else:
            labelled.discard(day)  # landed again and refused: not usable any more

    def in_window(day: str) -> int:
        from cormorant.sweep import window as window_of

        return len(labelled.intersection(window_of(day, window)))

    def train(day: str) -> bool:
        outcome = stage("train", day, {"window_days": window})
        if outcome is not None and outcome.succeeded:
            result.trained.append(day)
            return True
        return False

    for i, day in enumerate(days):
        ingest = stage("ingest", day)
        if ingest is not None and not ingest.succeeded:
            continue
        validate = stage("validate", day)
        signals = []
        if spec.labels_inline:
            land(day, validate)
        elif i >= lag:  # the labels of days[i - lag] became final today
            labelled_day = days[i - lag]
            land(labelled_day, stage("labels", labelled_day))
            signals.append(stage("performance", labelled_day))
        first = day == train_at if train_at else in_window(day) >= needs
        if first and not tried_first and "train" in stages and (train_at or not trained):
            tried_first = True  # a failed first training is reported, not retried every day
            trained = train(day)
            if not trained:
                result.why_no_model = f"no model: the training on {day} did not succeed (above)"
        predict = stage("predict", day) if trained or "train" not in stages else None
        if succeeded(predict, "batch_inference") or (predict is None and "predict" not in stages):
            signals.append(stage("drift", day))  # nothing to check on a day that was not scored
        if spec.labels_inline:
            signals.append(stage("performance", day))
        if trained and any(s is not None and s.retrain_signalled for s in signals):
            if "train" not in stages:  # scoring again with the same model would repeat the same day
                print(f"{day}: retraining signalled; not retrained (train is not among --stages)")
            elif train(day):
                stage("predict", day)
                stage("drift", day)
    if not trained and result.why_no_model is None:
        result.why_no_model = _why_no_model(
            spec, stages, days[-1], in_window(days[-1]), window, needs, train_at
        )
    return result


def _why_no_model(
    spec: Any, stages: list[str], last: str, found: int, window: int, needs: int, train_at: str | None
) -> str:
    if "train" not in stages:
        return f"no model yet: train is not among --stages, and MLflow holds no champion of {spec.name!r}"
    if train_at:
        return (
            f"no model yet: the run did not get to train on --train-at {train_at} (its ingest failed, above)"
        )
    lag = spec.target.available_after_days
    final = f", less the {lag} day(s) whose labels are final only later" if lag else ""
    return (
        f"no model yet: {found} labelled day(s) in the lake in the {window}-day window ending {last}; "
        f"a first training needs {needs} (the window's {window} days{final}); "
        f"land more days, or set --window-days or --train-at"
    )


def _use_home(home: str | None) -> None:
    """Read the state `cormorant run --home` left in ``home`` (default: the environment's)."""
    if not home:
        return
    from cormorant.config import embedded_environment

    embedded = embedded_environment(Path(home))
    for key in (
        "CORMORANT_HOME",
        "CORMORANT_LAKE_URI",
        "MLFLOW_TRACKING_URI",
        "CORMORANT_MLFLOW_ARTIFACT_URI",
    ):
        os.environ[key] = embedded[key]


def card(args: argparse.Namespace) -> int:
    from cormorant.card import model_card, render_markdown
    from cormorant.config import Settings
    from cormorant.lake import Lake

    spec = _load(args.spec)
    _use_home(args.home)
    settings = Settings.from_env()
    try:
        found = model_card(spec, settings, Lake(settings.lake_uri), args.version)
    except LookupError as exc:
        raise CliError(str(exc)) from exc
    print(json.dumps(found, indent=2, default=str) if args.json else render_markdown(found), end="")
    return 0


def summary(args: argparse.Namespace) -> int:
    from cormorant.config import Settings
    from cormorant.lake import Lake
    from cormorant.summary import format_summary, pipeline_summary

    spec = _load(args.spec)
    _use_home(args.home)
    settings = Settings.from_env()
    first = args.from_.isoformat() if args.from_ else None
    last = args.to.isoformat() if args.to else None
    if first and last and last < first:
        raise CliError(f"--to {last} is before --from {first}")
    result = pipeline_summary(spec, Lake(settings.lake_uri), settings, first=first, last=last)
    print(json.dumps(result, indent=2, default=str) if args.json else format_summary(result))
    return 0


def init(args: argparse.Namespace) -> int:
    from cormorant.spec import IDENTIFIER, QUALIFIED_IDENTIFIER
    from cormorant.spec_init import LabelDraft, columns_summary, draft_spec, sample_schema

    if not QUALIFIED_IDENTIFIER.match(args.table):
        raise CliError(f"--table {args.table!r} is not a plain SQL identifier (optionally schema-qualified)")
    if not IDENTIFIER.match(args.conn_id):
        raise CliError(f"--conn-id {args.conn_id!r} is not a plain identifier")
    out = Path(args.out) / f"{args.name}.yaml"
    if out.exists():
        raise CliError(f"{out} exists; choose another --out or spec name")
    if args.label_table and not QUALIFIED_IDENTIFIER.match(args.label_table):
        raise CliError(f"--label-table {args.label_table!r} is not a plain SQL identifier")
    if args.labels_after_days is not None and not args.label_table:
        raise CliError("--labels-after-days needs --label-table (labels in the feature rows come with them)")
    conn = _open(_connection(args.conn_id, _conn_value(args)))
    labels = None
    try:
        tables = [args.table, *([args.label_table] if args.label_table else [])]
        schemas = {}
        for table in tables:
            try:
                schemas[table] = sample_schema(conn, table)
            except Exception as e:
                raise CliError(f"cannot read table {table!r}: {first_line(e)}") from e
    finally:
        conn.close()
    schema = schemas[args.table]
    for table in tables:
        print(f"{table}: {columns_summary(schemas[table])}")
    if args.label_table:
        after = 1 if args.labels_after_days is None else args.labels_after_days
        labels = LabelDraft(args.label_table, schemas[args.label_table], after)
    try:
        text = draft_spec(
            args.name,
            table=args.table,
            schema=schema,
            target=args.target,
            conn_id=args.conn_id,
            partition_column=args.partition_column,
            timezone=args.timezone,
            labels=labels,
        )
    except ValueError as e:
        raise CliError(str(e)) from e
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}; review it, then: cormorant check {out}")
    return 0


def ui(args: argparse.Namespace) -> int:
    """Airflow's API server (the UI, the REST API and the Cormorant view) on the embedded state that
    `cormorant run --home` (or `make demo`) left in ``--home``; Airflow's simple auth manager prints
    the admin password it generates."""
    from cormorant.config import embedded_environment

    home = Path(args.home).resolve()
    if not (home / "airflow" / "airflow.db").exists():
        raise CliError(f"{home} holds no embedded state: run `cormorant run ... --home {args.home}` first")
    env = {**os.environ, **embedded_environment(home, specs_dir=Path(args.specs).resolve())}
    airflow = str(Path(sys.executable).with_name("airflow"))
    print(f"Airflow UI at http://localhost:{args.port}; the Cormorant view: its navigation's Cormorant entry")
    os.execve(airflow, [airflow, "api-server", "--port", str(args.port)], env)
    return 0  # not reached


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="cormorant", description="Cormorant: ML pipelines on Airflow, per spec."
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser("check", help="validate a spec and check it against its live source")
    p.add_argument("spec", help="the spec YAML file")
    _connection_args(p, "AIRFLOW_CONN_<source.conn_id>")
    p.add_argument("--sample-rows", type=int, default=10_000, help="recent rows to sample (default 10000)")
    p.set_defaults(func=check)
    p = commands.add_parser(
        "run", help="run the spec's real DAGs on the embedded default for a range of days"
    )
    p.add_argument("spec", help="the spec YAML file")
    p.add_argument(
        "--from", dest="from_", required=True, type=date.fromisoformat, help="first day, YYYY-MM-DD"
    )
    p.add_argument("--to", required=True, type=date.fromisoformat, help="last day, YYYY-MM-DD")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {','.join(STAGES)}")
    p.add_argument(
        "--window-days",
        type=int,
        help="the training window of every training of the run (default the spec's training.window_days); "
        "with no model yet, the first one is trained once the window ending a day holds its labelled days, "
        "counting the days earlier runs landed",
    )
    p.add_argument(
        "--train-at",
        type=date.fromisoformat,
        help="train on the window ending this day (one of the run's), whatever the lake or the champion; "
        "the days before it are landed, the days after it scored",
    )
    _connection_args(p, "AIRFLOW_CONN_<source.conn_id>")
    p.add_argument("--home", help="where the embedded state lives (default ./.cormorant/run-<spec>)")
    p.set_defaults(func=run)
    p = commands.add_parser("summary", help="what the lake and MLflow hold for the spec")
    p.add_argument("spec", help="the spec YAML file")
    p.add_argument("--home", help="the embedded state to read (default: $CORMORANT_HOME)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--from", dest="from_", type=date.fromisoformat, help="the first day to show, YYYY-MM-DD")
    p.add_argument("--to", type=date.fromisoformat, help="the last day to show, YYYY-MM-DD")
    p.set_defaults(func=summary)
    p = commands.add_parser("card", help="the model card of a registered version (default: the champion)")
    p.add_argument("spec", help="the spec YAML file")
    p.add_argument("--version", help="the registered version (default: the champion, else the latest)")
    p.add_argument("--home", help="the embedded state to read (default: $CORMORANT_HOME)")
    p.add_argument("--json", action="store_true", help="print the card's facts as JSON")
    p.set_defaults(func=card)
    p = commands.add_parser("ui", help="the Airflow UI with the Cormorant view, on an embedded state")
    p.add_argument("--home", default=".cormorant/demo", help="the embedded state (default: make demo's)")
    p.add_argument("--specs", default="include/examples", help="the specs folder (default: the demo's)")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=ui)
    p = commands.add_parser("init", help="draft a starting spec from a table's columns and types")
    p.add_argument("name", help="the spec's name (also its file name)")
    _connection_args(p, "AIRFLOW_CONN_<--conn-id>")
    p.add_argument("--conn-id", default="cormorant_warehouse", help="the connection id the spec names")
    p.add_argument("--table", required=True, help="the table (optionally schema-qualified)")
    p.add_argument("--target", required=True, help="the column to predict (in --label-table when given)")
    p.add_argument(
        "--label-table",
        help="the table holding the outcomes, keyed like the features (default: the target is in --table)",
    )
    p.add_argument(
        "--labels-after-days",
        type=int,
        choices=range(0, 366),
        metavar="K",
        help="with --label-table: the label of day D is final on day D + K (default 1)",
    )
    p.add_argument("--partition-column", help="the timestamp to partition by (default: the first one)")
    p.add_argument("--timezone", default="UTC", help="the time zone of a day (IANA, default UTC)")
    p.add_argument("--out", default="include/specs", help="the folder to write <name>.yaml in")
    p.set_defaults(func=init)
    return top


def _connection_args(p: argparse.ArgumentParser, default: str) -> None:
    conn = p.add_mutually_exclusive_group()
    conn.add_argument(
        "--conn-file", help=f"a file holding the warehouse connection's URI or JSON (default: {default})"
    )
    conn.add_argument(
        "--conn", help="the warehouse connection URI (a password here shows in `ps`: use --conn-file)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"cormorant {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
