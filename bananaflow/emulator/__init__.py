"""A local stand-in for Google AI Studio (Gemini API) and Vertex AI image generation.

Same wire format, auth checks, validation, refusals, quotas and faults as the real services
(see ../shared/reference/google-image-apis.md), serving real, deterministic images. Used by
``bananaflow emulator``, by the entry points' embedded mode (``cli/embedded.py``) and by
the tests.
"""

from bananaflow.emulator.app import create_app
from bananaflow.emulator.control import EmulatorControl
from bananaflow.emulator.credentials import write_service_account_file
from bananaflow.emulator.server import EmulatorServer, serve_forever

__all__ = [
    "EmulatorControl",
    "EmulatorServer",
    "create_app",
    "serve_forever",
    "write_service_account_file",
]
