"""The ``astrodriz-sm`` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import structlog

from ..config import RunConfig, recorded_environment, switches_from_environment
from ..errors import EXIT_CODE_MEANINGS, AstrodrizError, ExitCode, InputError, RunStateError
from ..logs import configure_logging
from ..statemachine import fold
from ..store.eventstore import EventStore, StoreError
from ..store.trailer import render_trailer

STORE_NAME = "astrodriz_sm.db"


def _store_for(args, input_path: Path | None = None) -> EventStore:
    """The event store: ``--store``, else ``astrodriz_sm.db`` in the input's (or current) directory."""
    if args.store:
        path = Path(args.store)
    else:
        path = (input_path.parent if input_path else Path.cwd()) / STORE_NAME
    try:
        return EventStore(path)
    except StoreError as exc:
        raise RunStateError(str(exc), str(path)) from exc


def _run_id(store: EventStore, run: str | None) -> str:
    if run:
        try:
            store.get_run(run)
        except StoreError as exc:
            raise RunStateError(str(exc)) from exc
        return run
    latest = store.latest_run()
    if latest is None:
        raise RunStateError(f"{store.path}: no runs in this store")
    return latest["run_id"]


def _report_end(store: EventStore, run_id: str, code: int) -> int:
    """Say how the run ended: a failure's one-line error is the last line on standard error."""
    run = fold(store.events(run_id))
    if run.ended and run.ended["status"] == "failed":
        print(f"astrodriz-sm: error: {run.ended['reason']}", file=sys.stderr)
    elif run.ended and run.ended["status"] == "skipped":
        print(f"astrodriz-sm: skipped: {run.ended['reason']}", file=sys.stderr)
    return code


def cmd_start(args) -> int:
    from ..handlers.init import input_kind
    from ..runner import Runner, start_run

    input_path = Path(args.input).resolve()
    if not input_path.parent.is_dir():
        raise InputError(f"{input_path}: directory does not exist", str(input_path))
    _, root = input_kind(input_path)
    apply_apriori, compute, notes = switches_from_environment()
    config = RunConfig(
        input=str(input_path),
        run_dir=str(Path(args.newpath).resolve() / root if args.newpath else input_path.parent),
        newpath=str(Path(args.newpath).resolve()) if args.newpath else None,
        force=args.force, inmemory=args.inmemory, basic=args.basic, num_cores=args.num_cores,
        debug=args.debug, apply_apriori=apply_apriori, compute_aposteriori=compute,
        environment=recorded_environment(), notes=tuple(notes))
    store = _store_for(args, input_path)
    previous = store.latest_run(str(input_path))
    if previous is not None:
        state = fold(store.events(previous["run_id"]))
        if not state.is_ended:
            if getattr(args, "resume", False):
                return _report_end(store, previous["run_id"], int(Runner(store, previous["run_id"]).resume()))
            where = "/".join(min(state.in_progress)) if state.in_progress else state.state
            raise RunStateError(f"{input_path}: run {previous['run_id']} on this input is unfinished "
                                f"(at {where}); continue it with --resume or 'astrodriz-sm resume "
                                f"{previous['run_id']}'")
    run_id = start_run(store, config, root)
    log = structlog.get_logger().bind(run_id=run_id)
    log.info("run started", stage="init", input=str(input_path), store=str(store.path))
    return _report_end(store, run_id, int(Runner(store, run_id, log=log).run()))


def cmd_resume(args) -> int:
    from ..runner import Runner

    store = _store_for(args)
    run_id = _run_id(store, args.run)
    run = fold(store.events(run_id))
    if run.is_ended:
        raise RunStateError(f"run {run_id} already ended {run.ended['status']}; nothing to resume")
    return _report_end(store, run_id, int(Runner(store, run_id).resume()))


def cmd_replay(args) -> int:
    store = _store_for(args)
    run_id = _run_id(store, args.run)
    text = render_trailer(store.get_run(run_id), store.events(run_id))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_status(args) -> int:
    store = _store_for(args)
    run_ids = [args.run] if args.run else [r["run_id"] for r in store.runs()]
    if args.run:
        _run_id(store, args.run)
    for rid in run_ids:
        run = fold(store.events(rid))
        if run.is_ended:
            status = f"{run.ended['status']} (exit {run.ended['exit_code']})"
        elif run.in_progress:
            status = "running or interrupted in " + ", ".join(f"{a}/{b}" for a, b in sorted(run.in_progress))
        else:
            status = f"unfinished in state {run.state}"
        print(f"{rid}  {status}  events={run.last_seq}  input={run.config.get('input')}")
        for stage, verdicts in run.verifications.items():
            for v in verdicts:
                print(f"    {stage}: {v['check']} {v['verdict']}")
    return 0


def cmd_verify_log(args) -> int:
    store = _store_for(args)
    run_ids = [_run_id(store, args.run)] if args.run else [r["run_id"] for r in store.runs()]
    bad = 0
    for rid in run_ids:
        res = store.verify(rid)
        if res.ok:
            print(f"{rid}: ok ({res.n_events} events, hash chain intact)")
        else:
            bad += 1
            print(f"{rid}: BROKEN at seq {res.first_bad_seq}: {res.reason}")
    return int(ExitCode.LOG_CORRUPT) if bad else 0


def cmd_simulate(args) -> int:
    from ..sim import config_from_args, simulate_association

    result = simulate_association(Path(args.outdir), config_from_args(args))
    print(f"wrote association {result.asn}")
    print(f"truth catalog {result.truth_catalog}")
    print(f"run it with: jref={result.outdir.resolve()}/ astrodriz-sm start {result.asn.resolve()}")
    return 0


def cmd_demo(args) -> int:
    from ..services import ServiceStore, start_server
    from ..sim import SimConfig, simulate_association

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise InputError(f"{workdir}: demo directory is not empty; give --workdir a new directory", str(workdir))
    print(f"simulating a 3-exposure ACS/WFC association with a 0.6 arcsec pointing error in {workdir}",
          file=sys.stderr)
    sim = simulate_association(workdir / "data", SimConfig(pointing_error=0.6))
    service_db = workdir / "astrometry_service.db"
    ServiceStore(service_db).load_directory(sim.service_dir)
    service = start_server(service_db)
    print(f"local astrometry service on {service.url}", file=sys.stderr)
    os.environ.update(service.environment)
    os.environ.setdefault("jref", str(sim.outdir) + "/")
    try:
        ns = argparse.Namespace(input=str(sim.asn), newpath=None, force=False, inmemory=False, basic=False,
                                num_cores=None, debug=False, store=None, resume=False)
        code = cmd_start(ns)
    finally:
        service.stop()
    store = EventStore(sim.outdir / STORE_NAME)
    run_id = store.latest_run()["run_id"]
    run = fold(store.events(run_id))
    print(f"\nrun {run_id}: {run.ended['status'] if run.ended else 'unfinished'} (exit {code})")
    for p in run.ended.get("products", []) if run.ended else []:
        print(f"product  {sim.outdir / p}")
    print(f"trailer  {sim.outdir / (run.inputs.get('root', sim.root) + '.tra')}")
    print(f"store    {store.path}")
    for stage, verdicts in run.verifications.items():
        for v in verdicts:
            numbers = (f"product {v['product_focus']:.1f} (z={v['product_z']:+.2f}), singles "
                       f"{', '.join(f'{x:.1f}' for x in v['single_focus'])}, accepted z "
                       f"[{v['z_min']:+.2f}, {v['z_max']:+.2f}]") if "product_focus" in v else ""
            print(f"{stage} {v['check']}: {v['verdict']} {numbers}".rstrip())
    decision = next((d for d in run.decisions if d.get("decision") == "wcs"), None)
    if decision:
        print(f"chosen WCS: {decision['chosen_wcsname']} ({decision['chosen_stage']} stage)")
    if run.ended and run.ended["status"] == "done":
        from astropy.io import fits
        from astropy.wcs import WCS
        from astropy.wcs.utils import proj_plane_pixel_scales

        from ..sim import measure_product_astrometry, observation_epoch

        product = run.ended["products"][-1]
        acc = measure_product_astrometry(sim.outdir / product, sim.truth_catalog,
                                         observation_epoch(sim.truth_json))
        scale = proj_plane_pixel_scales(WCS(fits.getheader(sim.outdir / product, ("SCI", 1))))[0] * 3.6e6
        print(f"accuracy of {product} against the truth: {acc.rms:.3f} px RMS "
              f"({acc.rms * scale:.1f} mas at {scale:.0f} mas/px) over {acc.n_stars} stars")
    return code


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {int(c)}  {c.name.lower():12s} {EXIT_CODE_MEANINGS[c]}" for c in ExitCode)
    p = argparse.ArgumentParser(prog="astrodriz-sm", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Distortion-corrected, aligned HST drizzled products, "
                                            "as an event-sourced state machine.",
                                epilog="exit codes:\n" + codes)
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

    def with_store(sp):
        sp.add_argument("--store", metavar="PATH", help=f"event store (default: {STORE_NAME} in the input's "
                                                        "directory for start, the current directory otherwise)")
        return sp

    s = with_store(sub.add_parser("start", help="process an association or exposure (runastrodriz)"))
    s.add_argument("input", help="<root>_asn.fits, <root>_raw.fits, or a single _flt/_flc file")
    s.add_argument("newpath", nargs="?", help="work in NEWPATH/<root>, move the results back, remove it")
    s.add_argument("-f", "--force", action="store_true", help="process even when DRIZCORR is OMIT")
    s.add_argument("-i", "--inmemory", action="store_true", help="final AstroDrizzle keeps intermediates in memory")
    s.add_argument("-b", "--basic", action="store_true", help="basic mode: write no headerlets")
    s.add_argument("-n", "--num-cores", type=int, metavar="N", help="cores for AstroDrizzle")
    s.add_argument("--debug", action="store_true", help="keep the stage directories")
    s.add_argument("--resume", action="store_true", help="continue this input's unfinished run, if any")
    s.set_defaults(func=cmd_start)

    s = with_store(sub.add_parser("resume", help="continue an interrupted run"))
    s.add_argument("run", nargs="?", help="run id (default: the latest run)")
    s.set_defaults(func=cmd_resume)

    s = with_store(sub.add_parser("replay", help="render a run's trailer from its events"))
    s.add_argument("run", nargs="?")
    s.add_argument("-o", "--output", metavar="FILE")
    s.set_defaults(func=cmd_replay)

    s = with_store(sub.add_parser("status", help="state of one run or of every run in the store"))
    s.add_argument("run", nargs="?")
    s.set_defaults(func=cmd_status)

    s = with_store(sub.add_parser("verify-log", help="check the hash chain of the event log"))
    s.add_argument("run", nargs="?")
    s.set_defaults(func=cmd_verify_log)

    from .explain import add_explain_arguments

    add_explain_arguments(sub.add_parser("explain", help="candidate WCSs of every exposure and why one was chosen"))

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
    s.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    """Entry point of ``astrodriz-sm``."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_json, console=not args.quiet)
    try:
        return int(args.func(args))
    except AstrodrizError as exc:
        print(f"astrodriz-sm: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except StoreError as exc:
        print(f"astrodriz-sm: error: {exc}", file=sys.stderr)
        return int(ExitCode.RUN_STATE)


if __name__ == "__main__":
    sys.exit(main())
