"""This node's id: random, made once, kept in ``<state_dir>/node-id``.

Acks name the node by it. The file is created whole (a temporary file hard-linked to the
name) or not at all, so two agents starting at once agree on one id.
"""

from __future__ import annotations

import os
import secrets

from node_agent.diskfile import FileMode, create_atomic, write_atomic
from node_agent.errors import StateError

NODE_ID_FILE = "node-id"
_NODE_ID_MODE = FileMode(0o644)


def node_id(state_dir: str) -> str:
    """This node's random id, made once and kept in ``<state_dir>/node-id``.

    The file is created complete or not at all. An empty one (left by a crash of a version
    that wrote it in place, before any ack could name it) is replaced by a new id.
    """
    path = os.path.join(state_dir, NODE_ID_FILE)
    existing: str | None = None
    try:
        with open(path, encoding="ascii") as f:
            existing = f.read().strip()
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:
        raise StateError(path, f"unreadable: {err}") from err
    if existing:
        return existing
    new_id = secrets.token_hex(16)
    data = f"{new_id}\n".encode()
    try:
        os.makedirs(state_dir, mode=0o755, exist_ok=True)
        if existing is None:
            create_atomic(path, data, _NODE_ID_MODE)
        else:
            write_atomic(path, data, _NODE_ID_MODE)
    except FileExistsError:
        return node_id(state_dir)
    except OSError as err:
        raise StateError(path, f"cannot be written: {err}") from err
    return new_id
