"""Runs a Tiltfile with stand-ins for Tilt's built-ins and prints what it asked Tilt to do.

Tilt's language is Starlark, a dialect of Python: the Tiltfile must parse as Python, use
nothing Starlark lacks, and then run here with every built-in recorded instead of executed.

    python3 tiltfile_harness.py <Tiltfile> <objects.json>

objects.json holds the objects `kustomize(...)` would render (test/images renders the overlay
with kubectl). Prints JSON: the calls to each built-in, with their arguments.
"""

import ast
import json
import sys

# Python that Starlark (as Tilt runs it) does not have.
NOT_STARLARK = {
    ast.Import: "import (use load())",
    ast.ImportFrom: "from … import (use load())",
    ast.ClassDef: "class",
    ast.Try: "try/except",
    ast.With: "with",
    ast.Raise: "raise (use fail())",
    ast.Assert: "assert",
    ast.Global: "global",
    ast.Nonlocal: "nonlocal",
    ast.Yield: "yield",
    ast.YieldFrom: "yield from",
    ast.Await: "await",
    ast.AsyncFunctionDef: "async def",
    ast.JoinedStr: "f-strings (use % or .format)",
    ast.Is: "is (use ==)",
    ast.IsNot: "is not (use !=)",
    ast.Delete: "del",
}


def starlark_problems(tree):
    problems = []
    for node in ast.walk(tree):
        for kind, what in NOT_STARLARK.items():
            if isinstance(node, kind):
                line = getattr(node, "lineno", "?")
                problems.append("line %s: %s is not Starlark" % (line, what))
    return problems


class Blob(str):
    """What kustomize() and encode_yaml_stream() return in Tilt."""


def main():
    tiltfile, objects_file = sys.argv[1], sys.argv[2]
    source = open(tiltfile).read()
    tree = ast.parse(source, filename=tiltfile)  # a SyntaxError fails the test with its line
    problems = starlark_problems(tree)
    with open(objects_file) as f:
        rendered = json.load(f)

    calls = []

    def record(name, result=None):
        def builtin(*args, **kwargs):
            calls.append({"fn": name, "args": list(args), "kwargs": kwargs})
            return result(*args, **kwargs) if result else None

        return builtin

    encoded = []

    def encode_yaml_stream(objects):
        encoded.append(json.loads(json.dumps(objects)))
        return Blob("<encoded objects>")

    step = lambda kind: lambda *args, **kwargs: {"step": kind, "args": list(args), "kwargs": kwargs}  # noqa: E731

    env = {
        "kustomize": record("kustomize", lambda path, **_: Blob("<kustomize %s>" % path)),
        "decode_yaml_stream": record("decode_yaml_stream", lambda _blob: json.loads(json.dumps(rendered))),
        "encode_yaml_stream": encode_yaml_stream,
        "k8s_yaml": record("k8s_yaml"),
        "docker_build": record("docker_build"),
        "k8s_resource": record("k8s_resource"),
        "local_resource": record("local_resource"),
        "update_settings": record("update_settings"),
        "allow_k8s_contexts": record("allow_k8s_contexts"),
        "watch_settings": record("watch_settings"),
        "sync": step("sync"),
        "run": step("run"),
        "fall_back_on": step("fall_back_on"),
        "link": lambda url, name=None: {"url": url, "name": name},
        "fail": lambda message: (_ for _ in ()).throw(SystemExit("fail(): %s" % message)),
    }
    exec(compile(tree, tiltfile, "exec"), env)  # noqa: S102 - the repository's own Tiltfile
    print(json.dumps({"problems": problems, "calls": calls, "encoded": encoded}, default=str))


if __name__ == "__main__":
    main()
