"""`reauthd sim`: run the simulator in the foreground, optionally seeded with a demo world."""

from __future__ import annotations

from reauthd.sim.cpamp import CPAMPSimServer, Policy
from reauthd.sim.server import SimServer, wait_for_stop_signal
from reauthd.sim.state import SimState


def seed_demo_world(state: SimState) -> list[str]:
    """A handful of realistic credentials, two of them revoked (one already marked, one silent)."""
    legacy = state.add_credential(
        "codex",
        email="alice@example.com",
        plan="plus",
        name="codex-alice@example.com-plus.json",
        note="legacy name",
    )
    plus = state.add_credential("codex", email="bob@example.com", plan="plus", priority=10)
    claude = state.add_credential("claude", email="carol@example.com")
    kimi = state.add_credential("kimi")
    xai = state.add_credential("xai", email="dave@example.com")
    vertex = state.add_credential(
        "vertex", project_id="acme-prod", email="svc@acme-prod.iam.gserviceaccount.com"
    )
    anti = state.add_credential("antigravity", email="erin@example.com", project_id="erin-proj")
    state.revoke(legacy.name, "token_invalidated", live=True)
    state.revoke(claude.name, "claude_revoked", live=False)
    return [a.name for a in (legacy, plus, claude, kimi, xai, vertex, anti)]


seed_demo = seed_demo_world


async def run_sim_cli(
    host: str,
    port: int,
    *,
    management_key: str = "sim-key",
    seed_demo: bool = True,
    allow_remote: bool = False,
    cpamp_port: int | None = None,
    cpamp_admin_key: str = "cpamp-admin-key",
) -> None:
    """Serve until SIGINT/SIGTERM, printing the base URL and how to authenticate (never the key).
    With `cpamp_port`, a CPA Manager Plus simulator runs beside it, wired to the same CPA state (its
    auto-disable changes the CPA simulator's files), with its queue on and auto-disable off."""
    sim = SimServer(management_key, host=host, port=port, allow_remote=allow_remote)
    await sim.start()
    cpamp: CPAMPSimServer | None = None
    if cpamp_port is not None:
        cpamp = CPAMPSimServer(
            cpamp_admin_key, host=host, port=cpamp_port, cpa=sim.state, policy=Policy(queue_enabled=True)
        )
        try:
            await cpamp.start()
        except BaseException:
            await sim.stop()
            raise
    if seed_demo:
        seed_demo_world(sim.state)
    print(f"CPA simulator listening on {sim.base_url}", flush=True)
    if cpamp is not None:
        print(
            f"CPAMP simulator listening on {cpamp.base_url}  (Admin Key: the --cpamp-admin-key value)",
            flush=True,
        )
    print(f"  management API: {sim.base_url}/v0/management/  (key: the --management-key value)")
    print(
        f"  control API:    {sim.base_url}/_sim/   proxy API key: {sim.state.settings.proxy_api_keys[0]}",
        flush=True,
    )
    try:
        await wait_for_stop_signal()
    finally:
        if cpamp is not None:
            await cpamp.stop()
        await sim.stop()
