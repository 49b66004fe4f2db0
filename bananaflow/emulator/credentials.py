"""A real service-account key file whose ``token_uri`` points at the emulator.

google-auth then signs a real RS256 JWT and POSTs it to the emulator's ``/token``, so the code
path that runs in production (file -> JWT grant -> bearer -> refresh on 401) runs in tests too.
The key authorises nothing anywhere else. One RSA key per process: generating a 2048-bit key
costs 60-150 ms of CPU, paid on every run an entry point attached to the emulator; each file
still gets its own key id and client id.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@functools.cache
def _process_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def service_account_info(token_uri: str, project: str) -> dict[str, str]:
    pem = _process_key_pem()
    email = f"bananaflow-emulator@{project}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(10**20 + secrets.randbelow(9 * 10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": (
            "https://www.googleapis.com/robot/v1/metadata/x509/" + email.replace("@", "%40")
        ),
        "universe_domain": "googleapis.com",
    }


def write_service_account_file(path: Path, token_uri: str, project: str) -> Path:
    """Write the key file readable by its owner only (as a real key should be) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(service_account_info(token_uri, project), indent=2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data)
    return path
