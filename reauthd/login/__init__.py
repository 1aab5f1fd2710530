"""The login a person completes on the recipient page: fresh sign-in links, callback checks, device codes,
Vertex keys, and the `get-auth-status` poll that hands a finished login to verification."""

from reauthd.login.callback import (
    MAX_CALLBACK_URL_CHARS,
    AcceptedCallback,
    CallbackProblem,
    CallbackRejected,
    check_callback_url,
)
from reauthd.login.flow import LoginFlow, Notice, PollOutcome
from reauthd.login.ports import CompletionRunner, LoginCPA, LoginStore
from reauthd.login.providers import LoginKind, ProviderLogin, UnsupportedProvider, login_for_provider
from reauthd.login.view import LoginView, Phase, describe
from reauthd.login.wording import Explanation, NextStep

__all__ = [
    "MAX_CALLBACK_URL_CHARS",
    "AcceptedCallback",
    "CallbackProblem",
    "CallbackRejected",
    "CompletionRunner",
    "Explanation",
    "LoginCPA",
    "LoginFlow",
    "LoginKind",
    "LoginStore",
    "LoginView",
    "NextStep",
    "Notice",
    "Phase",
    "PollOutcome",
    "ProviderLogin",
    "UnsupportedProvider",
    "check_callback_url",
    "describe",
    "login_for_provider",
]
