"""The option table: the command line, the API's checks, the campaign's arguments, the trailer and the
fingerprint all come from it."""

from dataclasses import fields

import pytest

from astrodriz_sm.api import run_config
from astrodriz_sm.cli.main import build_parser, run_options
from astrodriz_sm.model.options import RunConfig
from astrodriz_sm.errors import UsageError
from astrodriz_sm.model.options import (
    CHOSEN,
    OPTIONS,
    PRODUCT_SETTINGS,
    TRAILER_KEYS,
    chosen_options,
    start_arguments,
)
from astrodriz_sm.runner import fingerprint, start_run
from astrodriz_sm.statemachine import fold
from astrodriz_sm.store.eventstore import EventStore

# Every chosen option away from its default.
CHANGED = {"force": True, "inmemory": True, "basic": True, "num_cores": 3, "debug": True, "align_to_gaia": False,
           "manifest": True, "force_alignment": True, "verify_guiding": True, "centroids": "psf"}


def test_the_table_is_runconfig_options_in_order():
    names = [f.name for f in fields(RunConfig)]
    assert [o.name for o in OPTIONS] == [n for n in names if n not in ("input", "run_dir", "newpath",
                                                                       "environment", "notes")]
    assert {o.name: o.default for o in OPTIONS} == {f.name: f.default for f in fields(RunConfig)
                                                    if f.name in {o.name for o in OPTIONS}}
    assert set(CHANGED) == {o.name for o in CHOSEN}


def test_parser_defaults_are_the_api_defaults():
    args = build_parser().parse_args(["start", "jsim01010_asn.fits"])
    assert run_options(args) == chosen_options({})
    args = build_parser().parse_args(["batch", "jsim01010_asn.fits"])
    assert run_options(args) == {**chosen_options({}), "num_cores": 1}


@pytest.mark.parametrize("command", ["start", "batch"])
def test_start_arguments_round_trip_through_the_parser(command):
    argv = [command, *start_arguments(CHANGED), "jsim01010_asn.fits"]
    assert argv[1:-1] == ["-f", "-i", "-b", "-n", "3", "-d", "-g", "-m", "-a", "-v", "--centroids", "psf"]
    assert run_options(build_parser().parse_args(argv)) == CHANGED
    assert start_arguments(chosen_options({})) == ()


def test_run_config_takes_the_table_options(tmp_path):
    config, root = run_config(tmp_path / "jsim01010_asn.fits", environ={}, **CHANGED)
    assert root == "jsim01010"
    assert {k: getattr(config, k) for k in CHANGED} == {**CHANGED, "align_to_gaia": False}
    assert RunConfig.from_dict({**config.as_dict(), "root": root}) == config


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"num_cores": 0}, UsageError, "num_cores must be at least 1, not 0"),
    ({"centroids": "gauss"}, UsageError, "centroids must be one of drizzlepac, psf, not 'gauss'"),
    ({"force": "yes"}, UsageError, "force must be True or False, not 'yes'"),
    ({"reset_idctab": True}, TypeError, "unknown run option: reset_idctab"),
])
def test_run_config_refuses_what_the_table_does_not_take(tmp_path, options, error, message):
    with pytest.raises(error) as exc:
        run_config(tmp_path / "jsim01010_asn.fits", environ={}, **options)
    assert str(exc.value) == message


def test_trailer_lists_where_the_run_works_then_every_option():
    assert TRAILER_KEYS == ("run_dir", "newpath", "force", "inmemory", "basic", "num_cores", "debug",
                            "align_to_gaia", "manifest", "force_alignment", "verify_guiding", "apply_apriori",
                            "compute_aposteriori", "reset_idctab", "quality_testing", "centroids")


def test_fingerprint_holds_the_options_that_change_products(tmp_path):
    config, root = run_config(tmp_path / "jsim01010_asn.fits", environ={}, **CHANGED)
    store = EventStore(tmp_path / "astrodriz_sm.db")
    run = fold(store.events(start_run(store, config, root)))
    options = fingerprint(run)["options"]
    assert tuple(options) == PRODUCT_SETTINGS
    assert "num_cores" not in options
    assert options == {k: getattr(config, k) for k in PRODUCT_SETTINGS}


def test_version_is_the_installed_one():
    from importlib import metadata

    from .conftest import run_cli

    for flag in ("--version", "-V"):
        proc = run_cli(flag)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"astrodriz-sm {metadata.version('astrodriz-sm')}\n", "")
