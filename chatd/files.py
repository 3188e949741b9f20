"""Files only chatd's user may read: the data directory, the database, the SSH host key.

The database holds password hashes and the host key is a secret, so both are made
private from the first byte (created with their mode, not chmod-ed after).
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

# The data directory and the database in it: for chatd's user alone.
PRIVATE_DIRECTORY_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def create_private_directory(directory: Path) -> None:
    """Make ``directory`` (0700, chatd's user alone) if it is missing.

    The data directory holds the database and the SSH host key. A directory that
    already exists is left as it is: an operator may have chosen otherwise.
    """
    directory.mkdir(mode=PRIVATE_DIRECTORY_MODE, parents=True, exist_ok=True)


def create_private(path: Path) -> None:
    """Make ``path``'s directory (0700) and ``path`` (0600) if they are missing.

    The database holds password hashes, so nobody else on the machine may read
    it. SQLite gives its -wal and -shm files the database's own permissions, so
    creating the empty file 0600 before SQLite opens it covers all three. A file
    that already exists is left as it is.
    """
    create_private_directory(path.parent)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
