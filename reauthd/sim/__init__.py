"""The CPA simulator: a loopback CLIProxyAPI that follows shared/cpa-contract.md, for demos and tests."""

from reauthd.sim.server import SimServer, SimThread, run_sim_in_thread

__all__ = ["SimServer", "SimThread", "run_sim_in_thread"]
