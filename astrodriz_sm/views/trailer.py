"""The ``.tra`` trailer, rendered from the events alone.

Replay runs no handler: the same log always renders the same trailer, byte for byte.
"""

from __future__ import annotations

import json

from ..model.options import TRAILER_KEYS
from ..statemachine.state import (
    CANDIDATE,
    DECISION,
    NOTE,
    RUN_ENDED,
    RUN_RESUMED,
    RUN_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_INVALIDATED,
    STEP_STARTED,
    TRANSITION,
    VERIFICATION,
    WARNING,
)

_RULE = "=" * 78


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return str(value)


def _block(title: str, text: str) -> list[str]:
    lines = text.rstrip("\n").splitlines()
    return [f"    --- {title} ({len(lines)} lines) ---", *("    | " + ln for ln in lines), "    --- end ---"]


def _guiding(p: dict) -> list[str]:
    out = [f"verification guiding: {str(p.get('guiding', '')).upper()}  {p.get('file')}"]
    out += [f"    {k}: {p[k]}" for k in ("reason", "action") if p.get(k)]
    return out


def _verification(p: dict) -> list[str]:
    if p.get("check") == "guiding":
        return _guiding(p)
    head = f"verification {p.get('check')}: {str(p.get('verdict', '')).upper()}  product {p.get('product')}"
    out = [head]
    if "product_focus" in p:
        out.append(f"    product focus index {p['product_focus']:.6g} (z = {p['product_z']:+.3f}); "
                   f"accepted z range [{p['z_min']:+.3f}, {p['z_max']:+.3f}]")
        for name, v, z in zip(p["singles"], p["single_focus"], p["single_z"]):
            out.append(f"    single {name}: focus index {v:.6g} (z = {z:+.3f})")
        out.append(f"    singles mean {p['mean']:.6g}, std {p['std']:.6g}; rule: {p['rule']}")
    if p.get("reason"):
        out.append(f"    reason: {p['reason']}")
    return out


def _decision(p: dict) -> list[str]:
    kind = p.get("decision")
    if kind == "wcs":
        out = [f"decision wcs: chose {p.get('chosen_stage')} (WCSNAME {p.get('chosen_wcsname')})",
               f"    rule: {p.get('rule')}"]
        for c in p.get("candidates", []):
            line = f"    candidate {c['stage']}: WCSNAME {c.get('wcsname')}, verification {c['verdict']}"
            if "kept" in c:
                line += ", kept" if c["kept"] else ", discarded"
            if c.get("reason"):
                line += f" ({c['reason']})"
            out.append(line)
        return out
    if kind == "aposteriori_fit":
        out = [f"decision aposteriori_fit: chose {p['chosen_catalog']} ({p['chosen_method']} fit)"
               if p.get("chosen_catalog") else f"decision aposteriori_fit: no fit chosen - {p.get('reason')}"]
        out.append(f"    rule: {p['rule']}")
        out += [f"    candidate {c['catalog']} {c.get('method')}: quality {c['fit_quality']}, rms {_fmt(c.get('rms_mas'))} mas, "
                f"{c.get('matches')} matches, {'valid' if c['valid'] else 'not valid'}" for c in p["candidates"]]
        return out
    if kind and kind.endswith("_verification"):
        verdict = "VERIFIED" if p["verified"] else "NOT VERIFIED"
        return [f"decision {kind}: {verdict} (quality {p['quality']}) - {p['reason']}", f"    rule: {p['rule']}"]
    if kind and kind.endswith("_stage"):
        verdict = "KEPT" if p["kept"] else "DISCARDED"
        return [f"decision {kind}: {verdict} (WCSNAME {p.get('wcsname')}) - {p['reason']}"]
    return [f"decision {kind}"] + _generic({k: v for k, v in p.items() if k != "decision"})


def _candidate(p: dict) -> list[str]:
    if p.get("rms_mas") is None:
        return [f"candidate fit {p['catalog']} ({p['method']}): not valid - {p.get('reason')}"]
    out = [(f"candidate fit {p['catalog']} ({p['method']}): quality {p['fit_quality']}, "
            f"rms {p['rms_mas']:.2f} mas, {p['matches']} matches of {p['reference_sources']} reference sources, "
            f"{'valid' if p['valid'] else 'not valid'}")]
    out += [f"    {name}: {e['status']}, {e['nmatches']} matches, fit rms {_fmt(e['fit_rms_mas'])} mas"
            for name, e in sorted(p.get("exposures", {}).items())]
    return out


def _transition(p: dict) -> list[str]:
    out = [f"transition {p['from']} -> {p['to']} ({p['trigger']})"]
    out += [f"    guard {g['guard']}: {'yes' if g['result'] else 'no'} - {g['reason']}" for g in p["guards"]]
    return out


def _step_completed(p: dict) -> list[str]:
    out = ["completed"]
    blocks = []
    for key in sorted(p):
        value = p[key]
        if key == "log":
            if value:
                blocks.append(("library log", value))
        elif key == "inputs" and isinstance(value, dict):
            for k in sorted(value):
                out.append(f"    {k}: {_fmt(value[k])}")
        elif key == "products" and isinstance(value, list) and value and isinstance(value[0], dict):
            for prod in value:
                out.append(f"    product {prod['product']} from {', '.join(prod['inputs'])}: "
                           f"sha256 {prod['sha256']}, {prod['seconds']:.1f} s")
                out.append(f"      parameters ({prod['parameter_source']}): {_fmt(prod['parameters'])}")
                if prod.get("log"):
                    blocks.append((f"AstroDrizzle log for {prod['product']}", prod["log"]))
        else:
            out.append(f"    {key}: {_fmt(value)}")
    for title, text in blocks:
        out += _block(title, text)
    return out


def _run_started(p: dict) -> list[str]:
    cfg = p["config"]
    out = [f"run started: input {cfg['input']}", f"    astrodriz-sm {p.get('version')}; libraries "
           + ", ".join(f"{k} {v}" for k, v in sorted(p.get("libraries", {}).items()))]
    for k in TRAILER_KEYS:
        out.append(f"    {k}: {_fmt(cfg.get(k))}")
    for k, v in sorted(cfg.get("environment", {}).items()):
        out.append(f"    environment {k}={v}")
    out += [f"    note: {n}" for n in cfg.get("notes", [])]
    return out


def _run_ended(p: dict) -> list[str]:
    out = [f"run ended: {p['status'].upper()} (exit code {p['exit_code']})"]
    if p.get("reason"):
        out.append(f"    reason: {p['reason']}")
    out += [f"    product {x}" for x in p.get("products", [])]
    out += [f"    kept for inspection: {x}" for x in p.get("kept_directories", [])]
    if "process_seconds" in p:
        out.append(f"    {p['process_seconds']:.1f} s in this process, of which {p['log_seconds']:.2f} s "
                   f"({100 * p['log_share']:.2f} %) on the event log and trailer")
    return out


def _generic(p: dict) -> list[str]:
    return [f"    {k}: {_fmt(p[k])}" for k in sorted(p)]


_RENDER = {
    RUN_STARTED: _run_started,
    RUN_RESUMED: lambda p: [f"run resumed after {p.get('after', 'an interruption')}"] + _generic(
        {k: v for k, v in p.items() if k != "after"}),
    RUN_ENDED: _run_ended,
    STEP_STARTED: lambda p: ["started"],
    STEP_COMPLETED: _step_completed,
    STEP_FAILED: lambda p: [f"FAILED: {p.get('message')}"] + ([f"    exit code {p['exit_code']}"]
                                                                  if "exit_code" in p else []),
    STEP_INVALIDATED: lambda p: [f"invalidated, will be redone: {p['reason']}"],
    TRANSITION: _transition,
    VERIFICATION: _verification,
    DECISION: _decision,
    CANDIDATE: _candidate,
    NOTE: lambda p: [f"note: {p.get('message', '')}"],
    WARNING: lambda p: [f"WARNING library fallback: {p.get('message', '')}"],
}


def render_trailer(run: dict, events) -> str:
    """Render the trailer of a run.

    Parameters
    ----------
    run : dict
        The run's row (``run_id``, ``input``, ``root``).
    events : list of Event
        The run's events, in order.

    Returns
    -------
    str
    """
    lines = [_RULE, f"astrodriz-sm trailer for {run['root']}   run {run['run_id']}", f"input {run['input']}", _RULE]
    for ev in events:
        where = ev.stage + (f"/{ev.step}" if ev.step else "")
        try:
            body = _RENDER[ev.kind](ev.payload)
        except (KeyError, TypeError, ValueError):
            # An event shape this renderer does not know still reaches the trailer, in full.
            body = [ev.kind] + _generic(ev.payload)
        lines.append(f"{ev.utc} #{ev.seq:<4d} [{where}] {body[0]}")
        lines.extend(body[1:])
        if ev.kind in (RUN_ENDED, TRANSITION):
            lines.append("")
    return "\n".join(lines) + "\n"
