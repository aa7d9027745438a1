"""Write the S3 service model the store's client loads: botocore's, cut to what it calls.

Run: .venv/bin/python scripts/trim_s3_model.py   (after a botocore upgrade; commit the result)

``certfleet.store.S3Store`` calls four S3 operations (GetObject, PutObject, ListObjectsV2,
DeleteObject). botocore's S3 model describes about 100 and their documentation: parsed, it
is most of what an S3 client costs in memory (an agent with an ``s3://`` store idled above
64 MB with it). This keeps those four operations, the shapes they reach, and every other
field as botocore has it (protocol, traits, checksum rules), without documentation, in
``certfleet/store/s3model/s3/<api version>/service-2.json``, which the store puts first on
its client's model search path. The endpoint rules, paginators and the rest still come from
botocore. A model botocore does not have the version of is not used (``certfleet.store.s3``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore.session

OPERATIONS = ("GetObject", "PutObject", "ListObjectsV2", "DeleteObject")
TARGET = Path(__file__).resolve().parent.parent / "certfleet" / "store" / "s3model"


def _without_docs(value: Any) -> Any:
    """``value`` with every documentation text emptied (the keys stay: botocore reads some)."""
    if isinstance(value, dict):
        return {
            key: "" if key in ("documentation", "documentationUrl") else _without_docs(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_without_docs(item) for item in value]
    return value


def trimmed(model: dict[str, Any]) -> dict[str, Any]:
    shapes: dict[str, Any] = model["shapes"]
    needed: set[str] = set()

    def reach(name: str) -> None:
        if name in needed:
            return
        needed.add(name)
        shape = shapes[name]
        for key in ("member", "key", "value"):
            if key in shape:
                reach(shape[key]["shape"])
        for member in shape.get("members", {}).values():
            reach(member["shape"])

    operations = {name: model["operations"][name] for name in OPERATIONS}
    for operation in operations.values():
        for key in ("input", "output"):
            if key in operation:
                reach(operation[key]["shape"])
        for error in operation.get("errors", []):
            reach(error["shape"])
    kept = {key: value for key, value in model.items() if key not in ("operations", "shapes")}
    kept["operations"] = operations
    kept["shapes"] = {name: shapes[name] for name in sorted(needed)}
    return _without_docs(kept)


def main() -> None:
    loader = botocore.session.get_session().get_component("data_loader")
    model = loader.load_service_model("s3", "service-2")
    version = model["metadata"]["apiVersion"]
    path = TARGET / "s3" / version / "service-2.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trimmed(model), sort_keys=True, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes) from botocore {botocore.__version__}")


if __name__ == "__main__":
    main()
