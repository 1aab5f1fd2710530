"""reauthd: keeps CLIProxyAPI's OAuth accounts usable by getting people to log in again when tokens are revoked."""

__version__ = "0.1.0"
