"""`khofs memblock-tests [-v] [-m]`: the ported tools/testing/memblock suite, run as upstream's `main`.

Upstream's `./main` prints nothing when every check passes; with `-v` one kselftest line per
check, named by its prefix stack (`ok 7 : memblock_alloc: top-down: alloc_simple: passed`,
`not ok ...: failed`); `-m` runs the NUMA checks with movable_node, so the nodes are not
HOTPLUG.  The suite is the repository's pytest files (tests/test_memblock_*.py, in upstream's
order), run in-process; a check the pytest suite parametrizes further (numa/uma, ranges)
shows the rest of its id in parentheses.  Needs pytest and a source checkout.
"""

import sys
from pathlib import Path
from typing import Any, TextIO

# main.c's order: basic, alloc, alloc_helpers, alloc_low, alloc_nid (with its NUMA checks), exact_nid.
SUITE = ("basic", "alloc", "alloc_helpers", "alloc_low", "alloc_nid", "numa", "exact_nid")
TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
# Function names a basic_api.c check pushes as its prefix, longest first where one starts another.
_STEMS = ("add_node", "add", "reserve", "remove", "phys_free", "free", "set_bottom_up", "bottom_up",
          "trim_memory", "overlaps_region", "set_node", "initialization", "alloc_from", "alloc_low")
_DIRECTIONS = {"top_down": "top-down", "bottom_up": "bottom-up"}


def kselftest_name(name: str, params: dict[str, Any], param_ids: list[str]) -> str:
    """`memblock_alloc: top-down: alloc_simple` for test_alloc_simple[top_down-alloc]."""
    check = name.removeprefix("test_")
    api = params.get("api")
    if api is not None:
        family = "memblock_" + (api if api.startswith("alloc") else "alloc_" + api)
    elif check.startswith("exact_nid"):
        family = "memblock_alloc_exact_nid_raw"
    else:
        family = "memblock_" + next((s for s in _STEMS if check.startswith(s)), check)
    parts = [family]
    if "direction" in params:
        parts.append(_DIRECTIONS[params["direction"]])
    shown = {str(params.get(k)) for k in ("api", "direction", "movable_node")}
    rest = [i for i in param_ids if i not in shown and i not in ("hotplug", "movable_node")]
    parts.append(check + (f" ({', '.join(rest)})" if rest else ""))
    return ": ".join(parts)


class _Kselftest:
    """A pytest plugin that keeps upstream's output: kselftest lines with -v, else only a failure."""

    def __init__(self, out: TextIO, verbose: bool, movable_node: bool) -> None:
        self.out, self.verbose, self.movable_node = out, verbose, movable_node
        self.count = 0
        self.failed = 0
        self.names: dict[str, str] = {}

    def pytest_collection_modifyitems(self, items: list[Any], config: Any) -> None:
        """`-m` or not: each NUMA check runs once, in the mode main was started in."""
        keep, drop = [], []
        for item in items:
            spec = getattr(item, "callspec", None)
            params, ids = (spec.params, spec.id.split("-")) if spec else ({}, [])
            mode = params.get("movable_node")
            (drop if mode is not None and mode != self.movable_node else keep).append(item)
            self.names[item.nodeid] = kselftest_name(item.originalname, params, ids)
        items[:] = keep
        config.hook.pytest_deselected(items=drop)

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when != "call" and not report.failed:
            return
        name = self.names[report.nodeid]
        self.count += 1
        if report.passed:
            if self.verbose:
                self.out.write(f"ok {self.count} : {name}: passed\n")
            return
        self.failed += 1
        if self.verbose:
            self.out.write(f"not ok {self.count} : {name}: failed\n")
        else:
            crash = getattr(report.longrepr, "reprcrash", None)
            where = f"{Path(crash.path).name}:{crash.lineno}: {crash.message.splitlines()[0]}" if crash \
                else str(report.longrepr).strip().splitlines()[-1]
            self.out.write(f"khofs memblock-tests: {name}: {where}\n")


def run(verbose: bool = False, movable_node: bool = False, paths: list[str] | None = None,
        out: TextIO = sys.stdout) -> int:
    """Run the suite; 0 if every check passed, 1 if one failed, 2 if it could not run."""
    try:
        import pytest
    except ImportError:
        out.write("khofs memblock-tests: needs pytest (the `test` extra)\n")
        return 2
    if paths is None:
        paths = [str(TESTS_DIR / f"test_memblock_{name}.py") for name in SUITE]
        if not all(Path(p).exists() for p in paths):
            out.write(f"khofs memblock-tests: the ported suite is not here ({TESTS_DIR}): "
                      "it runs from a source checkout\n")
            return 2
    reporter = _Kselftest(out, verbose, movable_node)
    status = pytest.main([*paths, "-p", "no:terminal", "-p", "no:cacheprovider", "-o", "addopts=",
                          "-W", "ignore::pytest.PytestAssertRewriteWarning"], plugins=[reporter])
    if status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        out.write(f"khofs memblock-tests: pytest could not run the suite (exit status {int(status)})\n")
        return 2
    return 1 if reporter.failed else 0
