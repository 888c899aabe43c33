"""The ``astrodriz-sm`` command: parse, call the API (:mod:`astrodriz_sm.api`), print."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import sys
from pathlib import Path

from .. import api
from ..errors import EXIT_CODE_MEANINGS, AstrodrizError, ExitCode, InputError, Interrupted, UsageError
from ..model import STORE_NAME, partial_name
from ..model.options import CHOSEN
from ..store.eventstore import StoreCorrupt, StoreError
from ..version import __version__
from ..views.banner import unverified_banner


def _report_end(result: api.RunResult, show_report: bool = True) -> int:
    """Say how the run ended: a failure's one-line error is the last line on standard error."""
    if result.report is not None and show_report:
        _print_report(result.report)
    if result.status == "failed":
        print(f"astrodriz-sm: error: {result.reason}", file=sys.stderr)
    elif result.status == "skipped":
        print(f"astrodriz-sm: skipped: {result.reason}", file=sys.stderr)
    return result.exit_code


def _print_report(files) -> None:
    print(f"report   {files.html}")
    print(f"qa json  {files.qa_json}")


def cmd_start(args) -> int:
    return _report_end(api.process(
        args.input, args.newpath, store=args.store, log_json=args.log_json, console=not args.quiet,
        resume_unfinished=args.resume, restart=args.restart, expect_latest=args.expect_latest, report=args.report,
        **run_options(args)))


def cmd_resume(args) -> int:
    return _report_end(api.resume(args.run, store=args.store, log_json=args.log_json, console=not args.quiet,
                                  report=args.report))


def cmd_replay(args) -> int:
    text = api.replay(args.run, store=args.store, unverified=args.unverified)
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(partial_name(out.name))
        try:
            # Whole or not at all: a trailer cut by a full disk would pass for a shorter run.
            tmp.write_text(text)
            os.replace(tmp, out)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise UsageError(f"-o {out}: cannot write the trailer there: {exc.strerror or exc}") from exc
    else:
        sys.stdout.write(text)
    return 0


def cmd_report(args) -> int:
    if args.campaign is not None:
        if args.run or args.store or args.unverified:
            raise UsageError("report --campaign LEDGER takes no RUN, --store or --unverified: each run's store is "
                             "in the ledger")
        from ..campaign.report import campaign_report

        print(f"report   {campaign_report(args.campaign, output=args.output)}")
        return 0
    _print_report(api.report(args.run, store=args.store, output=args.output, unverified=args.unverified))
    return 0


def cmd_status(args) -> int:
    for row, run, check in api.status(args.run, store=args.store, unverified=args.unverified):
        if (banner := unverified_banner(check)) is not None:
            print(banner)
        if run.is_ended:
            status = f"{run.ended['status']} (exit {run.ended['exit_code']})"
        elif run.in_progress:
            status = "running or interrupted in " + ", ".join(f"{a}/{b}" for a, b in sorted(run.in_progress))
        else:
            status = f"unfinished in state {run.state}"
        print(f"{row['run_id']}  {status}  events={run.last_seq}  input={run.config.get('input')}")
        for stage, verdicts in run.verifications.items():
            for v in verdicts:
                print(f"    {stage}: {v['check']} {v['verdict']}")
    return 0


def cmd_verify_log(args) -> int:
    store = api.open_store(args.store, read_only=True)
    run_ids = [api.find_run(store, args.run)] if args.run else [r["run_id"] for r in store.runs()]
    bad = 0
    for rid in run_ids:
        res = store.verify(rid)
        if res.ok:
            print(f"{rid}: ok ({res.n_events} events, hash chain intact)")
        else:
            bad += 1
            print(f"{rid}: BROKEN at seq {res.first_bad_seq}: {res.reason}")
    return int(ExitCode.LOG_CORRUPT) if bad else 0


def cmd_explain(args) -> int:
    from ..views.explain import render_explain

    doc = api.explain(args.run, store=args.store, unverified=args.unverified)
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n" if args.json else render_explain(doc))
    return 0


def _size(text: str) -> int:
    from dask.utils import parse_bytes

    try:
        return int(parse_bytes(text))
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"expected a size such as 4GB, not {text!r}") from None


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, not {text!r}")
    return value


def cmd_batch(args) -> int:
    from ..campaign import read_input_list, run_batch

    inputs = list(args.inputs) + (read_input_list(args.from_file) if args.from_file else [])
    if not inputs:
        raise UsageError("batch: give INPUT files or --from-file LIST")
    result = run_batch(inputs, run_options(args), ledger_path=args.ledger, workers=args.workers,
                       memory_limit=args.memory_limit, scheduler=args.scheduler, scratch=args.scratch,
                       task_memory=args.task_memory, max_attempts=args.max_attempts, retry_failed=args.retry_failed,
                       dashboard_address=args.dashboard_address, no_workers_timeout=args.no_workers_timeout,
                       out=io.StringIO() if args.quiet else sys.stderr)
    return cmd_campaign_status(argparse.Namespace(ledger=args.ledger, json=False, slowest=5)) or result.exit_code


def cmd_campaign_status(args) -> int:
    from ..campaign import Ledger, campaign_summary, render_status

    ledger = Ledger(args.ledger)
    try:
        summary = campaign_summary(ledger, slowest=args.slowest)
    finally:
        ledger.close()
    sys.stdout.write(json.dumps(summary, indent=2) + "\n" if args.json else render_status(summary))
    return 0


def _simulate(outdir: Path, config_or_args):
    """Simulate, with the simulator's refusals as one-line errors: bad options, a missing template."""
    from ..sim import SimConfig, config_from_args, simulate_association

    try:
        config = config_or_args if isinstance(config_or_args, SimConfig) else config_from_args(config_or_args)
    except ValueError as exc:
        raise UsageError(f"simulate: {exc}") from None
    try:
        return simulate_association(outdir, config)
    except FileNotFoundError as exc:
        raise InputError(str(exc), exc.filename or "") from None


def cmd_simulate(args) -> int:
    result = _simulate(Path(args.outdir), args)
    print(f"wrote association {result.asn}")
    print(f"truth catalog {result.truth_catalog}")
    env = " ".join(f"{k}={v}" for k, v in result.environment.items())
    print(f"run it with: {env} astrodriz-sm start {result.asn.resolve()}")
    return 0


def cmd_demo(args) -> int:
    from ..services import ServiceStore, start_server
    from ..sim import SimConfig
    from ..sim.instruments import detector

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise InputError(f"{workdir}: demo directory is not empty; give --workdir a new directory", str(workdir))
    det = detector(args.instrument)
    # WFPC2 as runastrodriz takes it: one exposure's _c0m file (its four chips), not an association.
    n = 1 if det.is_wfpc2 else 3
    what = "a WFPC2 exposure" if det.is_wfpc2 else f"a {n}-exposure {det.instrume}/{det.detector} association"
    print(f"simulating {what} with a 0.6 arcsec pointing error in {workdir}", file=sys.stderr)
    sim = _simulate(workdir / "data", SimConfig(pointing_error=0.6, instrument=det.name, n_exposures=n))
    service_db = workdir / "astrometry_service.db"
    ServiceStore(service_db).load_directory(sim.service_dir)
    service = start_server(service_db)
    print(f"local astrometry service on {service.url}", file=sys.stderr)
    # The demo's own reference files (and CRDS cache) and service, whatever jref/iref and the URLs
    # are in this shell.
    environ = {**os.environ, **service.environment, **sim.environment}
    try:
        result = api.process(sim.c0m[0] if det.is_wfpc2 else sim.asn, environ=environ, log_json=args.log_json,
                             console=not args.quiet, report=True)
    finally:
        service.stop()
    _report_end(result, show_report=False)
    run = api.status(result.run_id, store=result.store)[0][1]
    print(f"\nrun {result.run_id}: {result.status} (exit {result.exit_code})")
    for p in result.products:
        print(f"product  {p}")
    print(f"trailer  {result.trailer}")
    print(f"store    {result.store}")
    _print_report(result.report)
    for stage, verdicts in run.verifications.items():
        for v in verdicts:
            numbers = (f"product {v['product_focus']:.1f} (z={v['product_z']:+.2f}), singles "
                       f"{', '.join(f'{x:.1f}' for x in v['single_focus'])}, accepted z "
                       f"[{v['z_min']:+.2f}, {v['z_max']:+.2f}]") if "product_focus" in v else ""
            print(f"{stage} {v['check']}: {v['verdict']} {numbers}".rstrip())
    decision = run.decision("wcs")
    if decision:
        print(f"chosen WCS: {decision['chosen_wcsname']} ({decision['chosen_stage']} stage)")
    if run.ended and run.ended["status"] == "done":
        from astropy.io import fits
        from astropy.wcs import WCS
        from astropy.wcs.utils import proj_plane_pixel_scales

        from ..sim import measure_product_astrometry, observation_epoch

        product = result.products[-1]
        acc = measure_product_astrometry(product, sim.truth_catalog, observation_epoch(sim.truth_json))
        scale = proj_plane_pixel_scales(WCS(fits.getheader(product, ("SCI", 1))))[0] * 3.6e6
        print(f"accuracy of {product.name} against the truth: {acc.rms:.3f} px RMS "
              f"({acc.rms * scale:.1f} mas at {scale:.0f} mas/px) over {acc.n_stars} stars")
    return result.exit_code


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def add_processing_options(s, num_cores_default: int | None = None) -> None:
    """start's processing options (runastrodriz's), on ``start`` and on ``batch``: the chosen rows of
    :data:`astrodriz_sm.model.options.OPTIONS`, each under its RunConfig name."""
    for o in CHOSEN:
        if o.type is bool:
            s.add_argument(*o.flags, dest=o.name, action="store_false" if o.inverted else "store_true",
                           help=o.help)
        elif o.type is int:
            default = num_cores_default if o.name == "num_cores" else o.default
            s.add_argument(*o.flags, dest=o.name, type=_at_least_one, metavar="N", default=default,
                           help=o.help + (f" (default {default})" if default else ""))
        else:
            s.add_argument(*o.flags, dest=o.name, choices=o.choices, default=o.default, help=o.help)


def run_options(args: argparse.Namespace) -> dict:
    """The API's run options from parsed ``start`` or ``batch`` arguments."""
    return {o.name: getattr(args, o.name) for o in CHOSEN}


def add_run_argument(parser, default: str = "the store's latest run") -> None:
    """The RUN argument of the commands that name a run (see :func:`astrodriz_sm.api.find_run`)."""
    parser.add_argument("run", nargs="?", metavar="RUN",
                        help=f"run id, association rootname or input file (its latest run); default: {default}")


def build_parser() -> argparse.ArgumentParser:
    width = max(len(c.name) for c in ExitCode)
    codes = "\n".join(f"  {int(c):<2d}  {c.name.lower():{width}s} {EXIT_CODE_MEANINGS[c]}" for c in ExitCode)
    p = argparse.ArgumentParser(prog="astrodriz-sm", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Distortion-corrected, aligned HST drizzled products, "
                                            "as an event-sourced state machine.",
                                epilog="exit codes:\n" + codes)
    p.add_argument("-V", "--version", action="version", version=f"astrodriz-sm {__version__}")

    def add_common(parser, suppress):
        parser.add_argument("--log-json", metavar="FILE", default=argparse.SUPPRESS if suppress else None,
                            help="append one JSON object per log record to FILE")
        parser.add_argument("-q", "--quiet", action="store_true",
                            default=argparse.SUPPRESS if suppress else False,
                            help="no progress lines on the console")

    # Accepted before or after the command; SUPPRESS keeps a command's defaults from hiding the former.
    add_common(p, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    add_common(common, suppress=True)
    subparsers = p.add_subparsers(dest="command", required=True)

    class _Sub:
        """add_parser with the common options on every command."""

        @staticmethod
        def add_parser(name, **kw):
            return subparsers.add_parser(name, parents=[common], **kw)

    sub = _Sub()

    def unverified(sp):
        sp.add_argument("--unverified", action="store_true",
                        help="render a log whose hash chain does not verify (exit 8 without it), under a banner "
                             "saying so")
        return sp

    def with_store(sp):
        sp.add_argument("--store", metavar="PATH", help=f"event store (default: {STORE_NAME} in the input's "
                                                        "directory for start, the current directory otherwise)")
        return sp

    s = with_store(sub.add_parser("start", help="process an association or exposure (runastrodriz)"))
    s.add_argument("input", help="<root>_asn.fits, <root>_raw.fits, or a single _flt/_flc file")
    s.add_argument("newpath", nargs="?", help="work in NEWPATH/<root>, move the results back, remove it")
    add_processing_options(s)
    s.add_argument("--resume", action="store_true", help="continue this input's unfinished run, if any")
    s.add_argument("--restart", action="store_true",
                   help="abandon this input's unfinished run, if any, and start a new one")
    s.add_argument("--expect-latest", metavar="RUN",
                   help="do nothing (exit 75) if this input's latest run, ended, is not RUN ('none': no run): "
                        "another process has run it since (batch plans with it)")
    s.add_argument("--report", action="store_true",
                   help="when the run ends, write <root>_report.html and <root>_qa.json beside the products")
    s.set_defaults(func=cmd_start)

    s = with_store(sub.add_parser("resume", help="continue an interrupted run"))
    add_run_argument(s)
    s.add_argument("--report", action="store_true",
                   help="when the run ends, write <root>_report.html and <root>_qa.json beside the products")
    s.set_defaults(func=cmd_resume)

    s = unverified(with_store(sub.add_parser("report",
                                             help="a run's report page (HTML) and QA JSON (drizzlepac's layout)")))
    add_run_argument(s)
    s.add_argument("-o", "--output", metavar="DIR",
                   help="write <root>_report.html and <root>_qa.json here (default: beside the event store); "
                        "with --campaign, <ledger stem>_campaign_report.html (default: beside the ledger)")
    s.add_argument("--campaign", metavar="LEDGER",
                   help="a campaign's report page instead, from its ledger and each run's event store")
    s.set_defaults(func=cmd_report)

    s = unverified(with_store(sub.add_parser("replay", help="render a run's trailer from its events")))
    add_run_argument(s)
    s.add_argument("-o", "--output", metavar="FILE")
    s.set_defaults(func=cmd_replay)

    s = unverified(with_store(sub.add_parser("status", help="state of one run or of every run in the store")))
    add_run_argument(s, default="every run in the store")
    s.set_defaults(func=cmd_status)

    s = with_store(sub.add_parser("verify-log", help="check the hash chain of the event log"))
    add_run_argument(s, default="every run in the store")
    s.set_defaults(func=cmd_verify_log)

    s = unverified(with_store(sub.add_parser("explain",
                                             help="candidate WCSs of every exposure and why one was chosen")))
    add_run_argument(s)
    s.add_argument("--json", action="store_true", help="print one JSON document instead of the report")
    s.set_defaults(func=cmd_explain)

    from ..campaign import LEDGER_NAME
    from ..campaign.driver import DASHBOARD_ADDRESS, NO_WORKERS_TIMEOUT_S

    s = sub.add_parser("batch", help="a campaign: many associations on a Dask cluster, resumable, with a ledger")
    s.add_argument("inputs", nargs="*", metavar="INPUT", help="inputs as start takes them")
    s.add_argument("--from-file", metavar="LIST", help="file listing the inputs, one a line ('#' starts a comment)")
    s.add_argument("--workers", type=_at_least_one, default=len(os.sched_getaffinity(0)), metavar="N",
                   help="workers of the embedded LocalCluster, one thread each (default: the usable cores)")
    s.add_argument("--memory-limit", default="auto", metavar="SIZE",
                   help="memory of each embedded worker, such as 4GB (default auto: this machine's, shared)")
    s.add_argument("--scheduler", metavar="ADDRESS", help="use the Dask scheduler at ADDRESS (tcp://host:8786)")
    s.add_argument("--scratch", metavar="DIR", help="node-local directory each run works in (start's NEWPATH)")
    s.add_argument("--ledger", default=LEDGER_NAME, metavar="PATH",
                   help=f"the campaign ledger (default {LEDGER_NAME} in the current directory)")
    s.add_argument("--task-memory", type=_size, metavar="SIZE",
                   help="memory one association's processes may use at first (default: its worker's limit); "
                        "a run killed past it is retried with twice as much")
    s.add_argument("--max-attempts", type=_at_least_one, default=3, metavar="N",
                   help="attempts per association in one batch (default 3; internal and processing failures "
                        "are retried once)")
    s.add_argument("--retry-failed", action="store_true",
                   help="run again associations whose run failed with a final exit code (bad input, ...)")
    s.add_argument("--dashboard-address", default=DASHBOARD_ADDRESS, metavar="ADDRESS",
                   help=f"where the embedded cluster serves its Dask dashboard (default {DASHBOARD_ADDRESS}, "
                        "this machine only; :8787 listens on every interface)")
    s.add_argument("--no-workers-timeout", type=_positive_seconds, default=NO_WORKERS_TIMEOUT_S, metavar="S",
                   help=f"stop the batch (exit 9, resumable) when the cluster has had no worker for S seconds "
                        f"(default {NO_WORKERS_TIMEOUT_S:g})")
    add_processing_options(s, num_cores_default=1)
    s.set_defaults(func=cmd_batch)

    s = sub.add_parser("campaign", help="a campaign's ledger")
    campaign = s.add_subparsers(dest="campaign_command", required=True)
    c = campaign.add_parser("status", help="counts by state, exit class and final WCS type; the slowest runs")
    c.add_argument("ledger", nargs="?", default=LEDGER_NAME, metavar="LEDGER",
                   help=f"the ledger (default {LEDGER_NAME} in the current directory)")
    c.add_argument("--json", action="store_true", help="print one JSON document")
    c.add_argument("--slowest", type=_at_least_one, default=5, metavar="N", help="slowest associations listed")
    c.set_defaults(func=cmd_campaign_status)

    s = sub.add_parser("simulate", help="write a simulated HST association with a known truth")
    s.add_argument("outdir")
    from ..sim import add_simulate_arguments

    add_simulate_arguments(s)
    s.set_defaults(func=cmd_simulate)

    from ..services.cli import add_serve_arguments, add_serve_load_arguments, cmd_serve, cmd_serve_load

    s = sub.add_parser("serve", help="local astrometry service (astrometry DB, guide-star offsets, catalogs)")
    add_serve_arguments(s)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("serve-load", help="load catalogs, headerlets and guide-star offsets into the service")
    add_serve_load_arguments(s)
    s.set_defaults(func=cmd_serve_load)

    s = sub.add_parser("demo", help="simulate an association, serve its astrometry locally, process it")
    s.add_argument("--workdir", default="astrodriz-sm-demo", help="new directory for the demo data")
    from ..sim.instruments import DEFAULT_INSTRUMENT, DETECTORS

    s.add_argument("--instrument", choices=list(DETECTORS), default=DEFAULT_INSTRUMENT,
                   help=f"detector of the simulated association (default {DEFAULT_INSTRUMENT}); all but "
                        "acs-wfc take their headers from real files in $ASTRODRIZ_SM_REFDATA")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    """Entry point of ``astrodriz-sm``."""
    args = build_parser().parse_args(argv)
    if args.func is cmd_batch:
        # SIGTERM (a scheduler's walltime, kill) stops a campaign as Ctrl-C does: its runs are stopped
        # and resumed by the next batch.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.func in (cmd_start, cmd_resume, cmd_demo):
        from ..runner import request_stop

        # SIGTERM ends a run as Ctrl-C does: workers stopped, one line saying how to resume.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, request_stop)
        default_hook = sys.unraisablehook

        def unraisable(info):
            # A stop that Python could not raise where the signal landed (in os.fork's callbacks) is
            # kept by the runner and raised at its next event: no need to print it.
            if not issubclass(info.exc_type, KeyboardInterrupt):
                default_hook(info)

        sys.unraisablehook = unraisable
    try:
        return int(args.func(args))
    except Interrupted as exc:
        print(f"astrodriz-sm: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("astrodriz-sm: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (``status | head -1``): nothing more to say, and no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
    except AstrodrizError as exc:
        print(f"astrodriz-sm: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except StoreCorrupt as exc:
        print(f"astrodriz-sm: error: {exc}", file=sys.stderr)
        return int(ExitCode.LOG_CORRUPT)
    except StoreError as exc:
        print(f"astrodriz-sm: error: {exc}", file=sys.stderr)
        return int(ExitCode.RUN_STATE)


if __name__ == "__main__":
    sys.exit(main())
