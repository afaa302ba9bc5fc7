"""Why the router decides what it decides: the core's explanation of one request, and a readable
rendering of it for ``cellgate explain``."""

from __future__ import annotations

from typing import Any

import orjson

from cellgate import _core

__all__ = ["explain", "render"]


def explain(
    router: _core.Router,
    method: str,
    path: str,
    token: str | None,
    client: str = "127.0.0.1",
    user_agent: str | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """What ``router.decide`` would decide now, and why; nothing is counted or taken. ``path``
    is the path as the server decoded it; ``headers`` may carry ``traceparent`` and, from a
    trusted proxy ``client``, the forwarded client address."""
    authorization = None
    if token:
        authorization = token if token.lower().startswith("bearer ") else f"Bearer {token}"
    return orjson.loads(
        router.explain(method, path, authorization, client, user_agent, headers=headers or [])
    )


def _row(label: str, text: str) -> str:
    return f"{label:<10}{text}"


def render(explanation: dict[str, Any]) -> str:
    """The explanation as aligned text, one step per line, cells one per line."""
    request = explanation["request"]
    agent = request.get("user_agent") or "none"
    path = request["path"] if request["path"] is not None else request.get("sent_path")
    lines = [_row("request", f"{request['method']} {path} from {request['client'] or 'unknown'}")]
    if "sent_path" in request and request["path"] is not None:
        lines.append(_row("", f"canonical path of {request['sent_path']!r}"))
    if request.get("via"):
        lines.append(_row("", f"via trusted proxies {', '.join(request['via'])}"))
    lines.append(_row("", f"user agent: {agent}"))
    lines.append(_row("", f"trace id: {request['trace_id']}"))
    token = explanation.get("token")
    if token is not None and token["ok"]:
        lines.append(_row("token", f"valid, customer {token['customer']}"))
    elif token is not None:
        lines.append(_row("token", f"refused: {token['reason']}: {token['detail']}"))
    profile = explanation.get("profile")
    if profile:
        flags = ", ".join(profile["flags"]) or "none"
        zone = profile.get("timezone") or "UTC"
        lines.append(
            _row(
                "profile",
                f"{profile['tier']} in {profile['region']}, base risk {profile['base_risk']:.2f},"
                f" flags {flags}, time zone {zone}",
            )
        )
    rate = explanation.get("rate_limit")
    if rate:
        state = "within quota" if rate["allowed"] else "over quota"
        lines.append(_row("rate", f"{state}: {rate['ratelimit']} (policy {rate['policy']})"))
    elif "rate_limit" in explanation:
        lines.append(_row("rate", "no quota for this tier"))
    risk = explanation.get("risk")
    if risk:
        lines.append(_row("risk", f"{risk['score']:.2f} {risk['level']} (base {risk['base']:.2f})"))
        for factor in risk["factors"]:
            lines.append(_row("", f"+{factor['weight']:.2f} {factor['kind']}: {factor['reason']}"))
    step_up = explanation.get("step_up")
    if step_up and step_up["required"]:
        verdict = "proven" if step_up["satisfied"] else f"missing: {step_up['missing']}"
        lines.append(_row("step-up", f"required at HIGH risk; {verdict}"))
    if "cells" in explanation:
        lines.append(_row("cells", f"placement {explanation['placement']}"))
        for cell in explanation["cells"]:
            load = f"{cell['in_flight']}/{cell['capacity']}"
            where = f"{cell['tier']}/{cell['region']} {cell['encryption']} {load}"
            if cell["excluded_by"] is None:
                verdict = "eligible"
            elif cell["fallback_candidate"]:
                verdict = "fallback candidate (another tier, same region)"
            else:
                verdict = f"excluded by {cell['excluded_by']}: {cell['detail']}"
            lines.append(_row("", f"{cell['id']:<22} {where:<36} {verdict}"))
    chosen = explanation.get("chosen")
    decision = explanation["decision"]
    if chosen:
        label = "chosen" if decision["ok"] else "would go"
        lines.append(_row(label, f"{chosen['id']} ({chosen['stage']}): {chosen['why']}"))
    if decision["ok"]:
        lines.append(_row("decision", "routed (200)"))
    else:
        lines.append(
            _row(
                "decision",
                f"refused {decision['status']} {decision['reason']}: {decision['detail']}",
            )
        )
    return "\n".join(lines)
