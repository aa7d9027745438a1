"""``files`` path templates of the agent config, and their safe expansion.

A template is an absolute path in which ``${ORDER_NAME}`` (the only variable) stands for
the order's safe directory name (``*`` replaced by ``_``). The directory a template names
is the directory part of the text before its first ``${ORDER_NAME}``; an expanded path must
stay inside it, whatever name the untrusted store supplies.
"""

from __future__ import annotations

import posixpath
import re

from certfleet.config.errors import UnsafeFilesPathError

ORDER_NAME_VARIABLE = "${ORDER_NAME}"
FILE_TYPES = ("key", "crt", "chain", "chained", "combined", "p12")
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,253}")


def check_template(template: str, *, needs_variable: bool) -> str:
    """Return ``template`` if it is a usable ``files`` path; raise ValueError saying why not."""
    if not template.startswith("/"):
        raise ValueError("must be an absolute path (starting with /)")
    if "\0" in template:
        raise ValueError("must not contain a NUL character")
    rest = template.replace(ORDER_NAME_VARIABLE, "")
    if "$" in rest:
        raise ValueError(f"{ORDER_NAME_VARIABLE} is the only variable (write $ only as part of it)")
    if template.endswith("/"):
        raise ValueError("must name a file, not a directory")
    parts = template.split("/")[1:]
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError("must not contain empty, '.' or '..' components")
    if needs_variable and ORDER_NAME_VARIABLE not in template:
        raise ValueError(
            f"must contain {ORDER_NAME_VARIABLE} here, or every order would write the same file"
        )
    return template


def template_directory(template: str) -> str:
    """The directory an expansion of ``template`` must stay inside."""
    return posixpath.dirname(template.split(ORDER_NAME_VARIABLE, 1)[0]) or "/"


def expand_files_path(template: str, safe_name: str) -> str:
    """``template`` with ``${ORDER_NAME}`` replaced by ``safe_name``.

    Raises UnsafeFilesPathError when the name is not a safe directory name (``/``, NUL,
    ``.``, ``..``, other characters than A-Z a-z 0-9 . _ -) or when the result would leave
    the directory the template names.
    """
    if not template.startswith("/"):
        raise UnsafeFilesPathError(template, safe_name, "the template is not an absolute path")
    if safe_name in (".", "..") or not _SAFE_NAME.fullmatch(safe_name):
        raise UnsafeFilesPathError(
            template, safe_name, "not a safe name (1-253 of A-Z a-z 0-9 . _ -, not . or ..)"
        )
    result = template.replace(ORDER_NAME_VARIABLE, safe_name)
    directory = template_directory(template).rstrip("/") + "/"
    if posixpath.normpath(result) != result or not result.startswith(directory):
        raise UnsafeFilesPathError(template, safe_name, f"the path would leave {directory}")
    return result
