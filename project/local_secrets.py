"""Secrets for local development only: made once into the git-ignored data folder.

A start with DEBUG off must be given SECRET_KEY and API_KEY_SECRET (the system checks
project.E001/E002): a secret made up at start-up in a container without a volume changes at
every restart, and with it every JWT and every API key digest. Local development still needs
no configuration: settings.py uses `local_secret_key` when DEBUG is on, and `make run` (the
production server in front of the local model, DEBUG off) runs `python -m project.local_secrets`,
which prints the shell exports of the secrets the environment and .env leave unset.
"""

import secrets
import shlex
from pathlib import Path


def local_secret_key(data_dir: Path) -> str:
    """Return the secret key kept in `data_dir`, made on first use (readable by its owner only)."""
    path = data_dir / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


def api_key_secret_from(secret_key: str) -> str:
    """Return the API-key secret derived from SECRET_KEY, as before API_KEY_SECRET was required
    (so the keys of an existing local database keep working)."""
    return f"api-key:{secret_key}"


def main() -> None:
    """Print `export NAME=value` for each secret the configuration leaves unset."""
    from project import settings

    exports = {}
    secret_key = settings.SECRET_KEY
    if "SECRET_KEY" in settings.UNSET_SECRETS:
        secret_key = exports["SECRET_KEY"] = local_secret_key(settings.DATA_DIR)
    if "API_KEY_SECRET" in settings.UNSET_SECRETS:
        exports["API_KEY_SECRET"] = api_key_secret_from(secret_key)
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
