"""A valid fleet as plain data, for tests to copy and break."""

import copy

FLEET = {
    "baseModels": [
        {"name": "tiny-llama", "source": "s3://models/tiny-llama",
         "engine": {"maxLoras": 2, "maxLoraRank": 8}},
        {"name": "tiny-qwen", "source": "/models/tiny-qwen"},
    ],
    "adapters": [
        {"name": "shout", "baseModel": "tiny-llama", "versions": [
            {"version": "v1", "source": "s3://adapters/shout/v1"},
            {"version": "v2", "source": "s3://adapters/shout/v2", "sha256": "a" * 64},
        ]},
        {"name": "json", "baseModel": "tiny-qwen", "versions": [{"version": "v1", "source": "s3://adapters/json/v1"}]},
    ],
    "routes": [
        {"name": "shout", "targets": [{"adapter": "shout", "version": "v1", "weight": 90},
                                      {"adapter": "shout", "version": "v2", "weight": 10}]},
        {"name": "json", "targets": [{"adapter": "json", "version": "v1"}]},
        {"name": "echo", "targets": [{"baseModel": "tiny-llama"}]},
    ],
}


def fleet(**changes):
    """A deep copy of FLEET; ``changes`` maps dotted paths (with list indexes) to new values."""
    data = copy.deepcopy(FLEET)
    for path, value in changes.items():
        set_path(data, [int(p) if p.isdigit() else p for p in path.split(".")], value)
    return data


def set_path(data, path, value) -> None:
    """Set (or, with DELETE, remove) the item at ``path`` (keys and list indexes) in nested data."""
    *parents, last = path
    node = data
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


DELETE = object()
