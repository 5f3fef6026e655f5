"""A Microsoft Graph + Entra ID emulator for Visio RDV (events, Teams meetings, tokens).

Serve it with `visio-rdv-graph-emulator` or, inside an event loop, `serve_in_background`.
"""

from visio_fakes.graph_emulator.app import create_app
from visio_fakes.graph_emulator.faults import FaultConfig
from visio_fakes.graph_emulator.main import RunningEmulator, serve_in_background
from visio_fakes.graph_emulator.settings import AppRegistration, EmulatorSettings
from visio_fakes.graph_emulator.state import EmulatorState

__all__ = [
    "AppRegistration",
    "EmulatorSettings",
    "EmulatorState",
    "FaultConfig",
    "RunningEmulator",
    "create_app",
    "serve_in_background",
]
