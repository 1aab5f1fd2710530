"""The CPA simulator: a loopback CLIProxyAPI that follows shared/cpa-contract.md, for demos and tests.

    async with SimServer("sim-key") as sim:          # HTTP + RESP on one free loopback port
        auth = sim.state.add_credential("codex", email="a@x.com", plan="plus")
        sim.state.revoke(auth.name, live=True)        # a real request fails: status error, RESP event
        ...  # talk to f"{sim.base_url}/v0/management" with "Authorization: Bearer sim-key"
        sim.state.advance(61)                         # cross CPA's 60-s / 5-min / 30-min windows

Sync code: `handle = run_sim_in_thread(management_key="k")`, `handle.base_url`,
`handle.call(lambda state: state.add_credential("claude"))`, `handle.stop()`.
Every control operation is also reachable over HTTP under `/_sim/` (see control.py).
"""

from reauthd.sim.server import SimServer, SimThread, run_sim_in_thread

__all__ = ["SimServer", "SimThread", "run_sim_in_thread"]
