"""The real ``amd-aiter`` wheel's Python sources, read with ``ast``: never imported.

Importing AMD's aiter starts JIT builds and needs ROCm, so the adapters in
``vllm_rocm_accel/backends/aiter`` are checked against the wheel's *source*:

* :func:`aiter_source_root` finds (or downloads once, with pip) the pinned
  wheel and unpacks its ``aiter/**/*.py``;
* :func:`resolve_public_function` follows ``aiter/__init__.py``'s imports, as
  Python would, to the ``def`` that ``aiter.<name>`` is, and returns its
  parameter list;
* :func:`check_call` asserts that a call shape (positional count, keyword
  names) binds to that signature;
* :func:`scan_adapter_source` / :func:`check_adapter_module` find every
  ``_aiter().NAME(...)`` call in an adapter module and check each one, so an
  adapter change is checked without a hand-written list of calls;
* :func:`wheel_member` reads one file of the wheel outside ``aiter/`` (the
  C++/HIP/CK sources the kernel-fact tests quote).

A missing wheel is an error, not a skip: CI has registry access, and a check
that silently stops running checks nothing.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

AITER_DIST = "amd-aiter"
AITER_VERSION = "0.1.7.post2.dev18"
AITER_REQUIREMENT = f"{AITER_DIST}=={AITER_VERSION}"
WHEEL_FILENAME = f"amd_aiter-{AITER_VERSION}-py3-none-any.whl"
# sha256 of the PyPI file; a truncated or substituted download fails loudly.
WHEEL_SHA256 = "fe139d74438217c35e87e3b961166bac8db2d381eadccb371da2e63615f05a31"

WHEEL_DIR_ENV = "VLLM_ROCM_ACCEL_AITER_WHEEL_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "amd-aiter"  # ignored by the repo's .gitignore (/.cache/)
DOWNLOAD_TIMEOUT_S = 300
_UNPACKED_MARKER = ".unpacked-from"


class AiterWheelUnavailable(RuntimeError):
    """The pinned amd-aiter wheel could not be found, downloaded or unpacked."""


# --------------------------------------------------------------------------
# Finding the wheel's sources
# --------------------------------------------------------------------------
def aiter_source_root() -> Path:
    """The unpacked ``aiter`` package directory of amd-aiter==AITER_VERSION.

    ``$VLLM_ROCM_ACCEL_AITER_WHEEL_DIR`` (a directory holding the ``.whl``, or an
    unpacked tree: ``DIR/aiter/__init__.py`` or ``DIR`` being ``aiter/`` itself)
    wins; otherwise ``<repo>/.cache/amd-aiter/``, where the wheel is downloaded
    with pip on first use. Raises :class:`AiterWheelUnavailable` with the reason.
    """
    env_dir = os.environ.get(WHEEL_DIR_ENV) or None
    if env_dir not in _roots:  # failures are remembered too: one pip attempt per session, not per test
        try:
            _roots[env_dir] = _find_source_root(env_dir)
        except AiterWheelUnavailable as err:
            _roots[env_dir] = err
    found = _roots[env_dir]
    if isinstance(found, AiterWheelUnavailable):
        raise AiterWheelUnavailable(str(found))
    return found


_roots: dict[Optional[str], object] = {}


def _find_source_root(env_dir: Optional[str]) -> Path:
    if env_dir is not None:
        return _root_from_dir(Path(env_dir).expanduser())
    unpacked = _unpacked_dir(CACHE_DIR)
    if _is_complete(unpacked):
        return unpacked / "aiter"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with _cache_lock(CACHE_DIR):  # parallel test workers download once
        wheel = CACHE_DIR / WHEEL_FILENAME
        if not wheel.is_file():
            _download(CACHE_DIR)
        return _unpack(wheel, CACHE_DIR)


@contextlib.contextmanager
def _cache_lock(cache: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; the unpack is atomic anyway
        yield
        return
    with (cache / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _root_from_dir(d: Path) -> Path:
    where = f"{WHEEL_DIR_ENV}={d}"
    if not d.is_dir():
        raise AiterWheelUnavailable(f"{where} is not a directory")
    for tree in (d / "aiter", d):
        if tree.name == "aiter" and (tree / "__init__.py").is_file():
            _check_tree_version(tree, where)
            return tree
    wheel = d / WHEEL_FILENAME
    if wheel.is_file():
        return _unpack(wheel, CACHE_DIR)
    others = sorted(p.name for p in d.glob("amd_aiter-*.whl"))
    raise AiterWheelUnavailable(
        f"{where} holds neither {WHEEL_FILENAME} nor an unpacked aiter/ tree"
        + (f" (found other versions: {', '.join(others)}; the checks are pinned to {AITER_REQUIREMENT})" if others else "")
    )


def _check_tree_version(tree: Path, where: str) -> None:
    """An unpacked tree next to its dist-info must be the pinned version."""
    infos = sorted(p.name for p in tree.parent.glob("amd_aiter-*.dist-info"))
    if infos and f"amd_aiter-{AITER_VERSION}.dist-info" not in infos:
        raise AiterWheelUnavailable(
            f"{where}: the aiter tree at {tree} comes from {', '.join(infos)}, "
            f"but the checks are pinned to {AITER_REQUIREMENT}"
        )


def _download(cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        AITER_REQUIREMENT, "-d", str(cache),
    ]
    hint = (
        f"the aiter adapter checks need the {AITER_REQUIREMENT} wheel; download it with "
        f"`{' '.join(cmd[2:])}` or point {WHEEL_DIR_ENV} at a directory holding it"
    )
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AiterWheelUnavailable(f"pip download timed out after {DOWNLOAD_TIMEOUT_S} s; {hint}") from None
    except OSError as err:
        raise AiterWheelUnavailable(f"could not run pip ({err}); {hint}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
        raise AiterWheelUnavailable(f"pip download failed (exit {proc.returncode}):\n{tail}\n{hint}")
    if not (cache / WHEEL_FILENAME).is_file():
        got = sorted(p.name for p in cache.glob("*.whl"))
        raise AiterWheelUnavailable(f"pip download succeeded but {WHEEL_FILENAME} is not in {cache} (found {got}); {hint}")


def _unpacked_dir(cache: Path) -> Path:
    return cache / f"amd_aiter-{AITER_VERSION}"


def _is_complete(unpacked: Path) -> bool:
    return (unpacked / _UNPACKED_MARKER).is_file() and (unpacked / "aiter" / "__init__.py").is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unpack(wheel: Path, cache: Path) -> Path:
    """Extract only ``aiter/**/*.py`` into ``cache/amd_aiter-<version>/`` (atomically)."""
    dest = _unpacked_dir(cache)
    if _is_complete(dest):
        return dest / "aiter"
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        raise AiterWheelUnavailable(
            f"{wheel} has sha256 {digest}, not the PyPI file's {WHEEL_SHA256}; delete it and retry"
        )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                parts = Path(info.filename).parts
                if not parts or parts[0] != "aiter" or not info.filename.endswith(".py"):
                    continue
                if info.filename.startswith("/") or ".." in parts:
                    raise AiterWheelUnavailable(f"{wheel}: refusing to extract {info.filename!r}")
                zf.extract(info, tmp)
        (tmp / _UNPACKED_MARKER).write_text(f"{wheel.name} sha256={digest}\n")
        if dest.exists() and not _is_complete(dest):
            shutil.rmtree(dest)  # a stale, interrupted unpack
        try:
            os.replace(tmp, dest)
        except OSError:
            if not _is_complete(dest):  # lost a race to a concurrent unpack, which is fine
                raise
    except zipfile.BadZipFile as err:
        raise AiterWheelUnavailable(f"{wheel} is not a valid wheel ({err}); delete it and retry") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest / "aiter"


@functools.lru_cache(maxsize=None)
def wheel_member(member: str) -> str:
    """The text of one file of the pinned wheel, e.g. ``aiter_meta/csrc/...`` (the C++, HIP and CK
    sources ship in it, outside the unpacked ``aiter/**/*.py``).

    Skips the calling test where only an unpacked ``aiter/`` tree is here (no ``.whl``); fails on a
    wheel that is not the pinned one.
    """
    import pytest  # only the kernel-source tests call this

    aiter_source_root()  # downloads the wheel into the cache if needed
    candidates = [CACHE_DIR / WHEEL_FILENAME]
    if os.environ.get(WHEEL_DIR_ENV):
        candidates.insert(0, Path(os.environ[WHEEL_DIR_ENV]).expanduser() / WHEEL_FILENAME)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        pytest.skip(f"the kernel-source checks read {WHEEL_FILENAME}; only an unpacked aiter/ tree is here")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == WHEEL_SHA256, f"{path} is not the pinned wheel (sha256 {digest})"
    with zipfile.ZipFile(path) as zf:
        return zf.read(member).decode()


def squash(text: str) -> str:
    """``text`` with every run of white space made one space (to match source across line breaks)."""
    return re.sub(r"\s+", " ", text)


# --------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------
_KINDS = {
    "positional_only": inspect.Parameter.POSITIONAL_ONLY,
    "positional_or_keyword": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "var_positional": inspect.Parameter.VAR_POSITIONAL,
    "keyword_only": inspect.Parameter.KEYWORD_ONLY,
    "var_keyword": inspect.Parameter.VAR_KEYWORD,
}
KIND_NAMES = {v: k for k, v in _KINDS.items()}


class _Source:
    """Source text that prints as itself inside an ``inspect.Signature``."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # a key of _KINDS: positional_only, positional_or_keyword, var_positional, keyword_only, var_keyword
    default: Optional[str] = None  # the default's source text; None when there is no default
    annotation: Optional[str] = None

    @property
    def has_default(self) -> bool:
        return self.default is not None

    @property
    def required(self) -> bool:
        return not self.has_default and self.kind not in ("var_positional", "var_keyword")


@dataclass(frozen=True)
class FunctionSignature:
    """What ``aiter.<name>`` is: a ``def`` in one module of the wheel."""

    name: str  # the public name, aiter.<name>
    def_name: str  # the name in the def (differs when imported ``as``)
    module: str  # dotted, e.g. aiter.ops.rmsnorm
    path: Path
    relpath: str  # e.g. aiter/ops/rmsnorm.py
    lineno: int
    params: tuple[Param, ...]
    returns: Optional[str]
    decorators: tuple[str, ...]
    via: tuple[str, ...] = field(default=())  # the import statements followed, outermost first

    @property
    def where(self) -> str:
        return f"{self.relpath}:{self.lineno}"

    def inspect_signature(self) -> inspect.Signature:
        params = [
            inspect.Parameter(
                p.name, _KINDS[p.kind],
                default=_Source(p.default) if p.has_default else inspect.Parameter.empty,
                annotation=_Source(p.annotation) if p.annotation else inspect.Parameter.empty,
            )
            for p in self.params
        ]
        returns = _Source(self.returns) if self.returns else inspect.Signature.empty
        return inspect.Signature(params, return_annotation=returns)

    def __str__(self) -> str:
        return f"{self.def_name}{self.inspect_signature()}"

    def describe(self) -> str:
        deco = "".join(f"@{d} " for d in self.decorators)
        chain = "".join(f"\n    via {v}" for v in self.via)
        return f"{deco}def {self}  [{AITER_REQUIREMENT} {self.where}]{chain}"


def _params_of(args: ast.arguments) -> tuple[Param, ...]:
    def ann(a: ast.arg) -> Optional[str]:
        return ast.unparse(a.annotation) if a.annotation is not None else None

    positional = [(a, "positional_only") for a in args.posonlyargs] + [(a, "positional_or_keyword") for a in args.args]
    first_default = len(positional) - len(args.defaults)
    out = []
    for i, (a, kind) in enumerate(positional):
        default = ast.unparse(args.defaults[i - first_default]) if i >= first_default else None
        out.append(Param(a.arg, kind, default, ann(a)))
    if args.vararg is not None:
        out.append(Param(args.vararg.arg, "var_positional", None, ann(args.vararg)))
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        out.append(Param(a.arg, "keyword_only", ast.unparse(d) if d is not None else None, ann(a)))
    if args.kwarg is not None:
        out.append(Param(args.kwarg.arg, "var_keyword", None, ann(args.kwarg)))
    return tuple(out)


@dataclass(frozen=True)
class _Binding:
    """How a module-level name got its value (the last statement that bound it)."""

    kind: str  # def | from | module | external | other | conditional
    module: str  # the module holding the statement
    lineno: int
    order: int  # statement index in the module, to compare with opaque statements
    text: str  # the statement, for messages
    node: Optional[ast.AST] = None  # kind == def
    target: Optional[str] = None  # kind == from: the (absolute) module imported from
    attr: Optional[str] = None  # kind == from: the name imported


class _SourceTree:
    """Module namespaces of one unpacked package, computed statically.

    Top-level statements are followed in order, so later bindings shadow
    earlier ones as at import time. ``from M import *`` binds ``M.__all__``
    (a literal) or every public module-level name of M. Names bound inside
    ``if``/``try``/``for``/``while``/``with`` blocks are marked conditional, and a
    star import from outside the package makes earlier bindings uncertain:
    resolving such a name fails with the reason instead of guessing.
    """

    def __init__(self, root: Path):
        self.root = root
        self.package = root.name
        self._ns: dict[str, dict[str, _Binding]] = {}
        self._opaque: dict[str, list[tuple[int, str]]] = {}
        self._all: dict[str, Optional[list[str]]] = {}
        self._all_error: dict[str, str] = {}
        self._building: set[str] = set()

    # -- files ---------------------------------------------------------------
    def module_file(self, dotted: str) -> Optional[Path]:
        parts = dotted.split(".")
        if parts[0] != self.package:
            return None
        base = self.root.parent.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def relpath(self, dotted: str) -> str:
        path = self.module_file(dotted)
        return path.relative_to(self.root.parent).as_posix() if path else dotted

    def _absolute(self, current: str, level: int, module: Optional[str]) -> str:
        if level == 0:
            return module or ""
        path = self.module_file(current)
        package = current if path is not None and path.name == "__init__.py" else current.rpartition(".")[0]
        parts = package.split(".")
        if level - 1 > 0:
            parts = parts[: len(parts) - (level - 1)]
        return ".".join(parts + ([module] if module else []))

    def _internal(self, dotted: str) -> bool:
        return dotted == self.package or dotted.startswith(self.package + ".")

    # -- namespaces ----------------------------------------------------------
    def namespace(self, dotted: str) -> dict[str, _Binding]:
        if dotted in self._ns:
            return self._ns[dotted]
        path = self.module_file(dotted)
        if path is None:
            raise LookupError(f"module {dotted} is not in the wheel (looked under {self.root})")
        ns: dict[str, _Binding] = {}
        opaque: list[tuple[int, str]] = []
        self._ns[dotted], self._opaque[dotted] = ns, opaque  # a cycle sees the partial namespace, as Python would
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self._all[dotted] = None
        for order, stmt in enumerate(tree.body):
            self._bind(dotted, order, stmt, ns, opaque, conditional=False)
        return ns

    def _bind(self, dotted, order, stmt, ns, opaque, conditional: bool) -> None:
        text = ast.unparse(stmt).split("\n", 1)[0]

        def put(name: str, **kw) -> None:
            if conditional:
                ns[name] = _Binding("conditional", dotted, stmt.lineno, order, text)
            else:
                ns[name] = _Binding(module=dotted, lineno=stmt.lineno, order=order, text=text, **kw)

        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            put(stmt.name, kind="def", node=stmt)
        elif isinstance(stmt, ast.ClassDef):
            put(stmt.name, kind="other")
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                put(alias.asname or alias.name.split(".")[0], kind="module")
        elif isinstance(stmt, ast.ImportFrom):
            source = self._absolute(dotted, stmt.level, stmt.module)
            for alias in stmt.names:
                if alias.name == "*":
                    if not self._internal(source) or self.module_file(source) is None:
                        opaque.append((order, f"{self.relpath(dotted)}:{stmt.lineno}: {text}"))
                        continue
                    names = self.exported(source)
                    for src_order, why in self._opaque.get(source, []):
                        opaque.append((order, f"{self.relpath(dotted)}:{stmt.lineno}: {text}, which runs {why}"))
                    for name in names:
                        put(name, kind="from", target=source, attr=name)
                elif self._internal(source):
                    put(alias.asname or alias.name, kind="from", target=source, attr=alias.name)
                else:
                    put(alias.asname or alias.name, kind="external")
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for t in targets:
                for node in ast.walk(t):
                    if isinstance(node, ast.Name):
                        put(node.id, kind="other")
                        if node.id == "__all__":
                            self._note_all(dotted, stmt)
        elif isinstance(stmt, ast.Delete):
            for t in stmt.targets:
                if isinstance(t, ast.Name):
                    ns.pop(t.id, None)
        elif isinstance(stmt, (ast.If, ast.Try, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith)):
            inner = list(stmt.body) + list(getattr(stmt, "orelse", [])) + list(getattr(stmt, "finalbody", []))
            for handler in getattr(stmt, "handlers", []):
                inner += handler.body
            for sub in inner:  # external star imports in here are recorded as opaque by _bind
                self._bind(dotted, order, sub, ns, opaque, conditional=True)

    def _note_all(self, dotted: str, stmt: ast.stmt) -> None:
        value = getattr(stmt, "value", None)
        try:
            names = ast.literal_eval(value) if value is not None else None
        except ValueError:
            names = None
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            self._all_error[dotted] = f"{self.relpath(dotted)}:{stmt.lineno}: __all__ is not a literal list of names"
        elif isinstance(stmt, ast.AugAssign):
            self._all[dotted] = list(self._all.get(dotted) or []) + list(names)
        else:
            self._all[dotted] = list(names)

    def exported(self, dotted: str) -> list[str]:
        """The names ``from <dotted> import *`` binds."""
        ns = self.namespace(dotted)
        if dotted in self._all_error:
            raise LookupError(f"cannot tell what `from {dotted} import *` binds: {self._all_error[dotted]}")
        explicit = self._all.get(dotted)
        if explicit is not None:
            return list(explicit)
        return [n for n in ns if not n.startswith("_")]

    # -- resolution ----------------------------------------------------------
    def resolve(self, dotted: str, name: str, public: str, via: tuple[str, ...] = ()) -> FunctionSignature:
        if len(via) > 64:
            raise LookupError(f"aiter.{public}: import cycle: " + " -> ".join(via))
        ns = self.namespace(dotted)
        here = self.relpath(dotted)
        binding = ns.get(name)
        if binding is None:
            if self.module_file(f"{dotted}.{name}") is not None:
                raise LookupError(f"aiter.{public}: {dotted}.{name} is a module, not a function")
            hint = "".join(f"\n  (unresolvable: {why})" for _, why in self._opaque.get(dotted, []))
            raise LookupError(f"aiter.{public}: no module-level binding of {name!r} in {here}{hint}")
        later = [why for order, why in self._opaque.get(dotted, []) if order >= binding.order]
        if later:
            raise LookupError(
                f"aiter.{public}: {name!r} bound at {here}:{binding.lineno} may be shadowed by "
                + "; ".join(later)
            )
        step = f"{here}:{binding.lineno}: {binding.text}"
        if binding.kind == "def":
            node = binding.node
            return FunctionSignature(
                name=public,
                def_name=node.name,
                module=dotted,
                path=self.module_file(dotted),
                relpath=here,
                lineno=node.lineno,
                params=_params_of(node.args),
                returns=ast.unparse(node.returns) if node.returns is not None else None,
                decorators=tuple(ast.unparse(d) for d in node.decorator_list),
                via=via,
            )
        if binding.kind == "from":
            submodule = self.module_file(f"{binding.target}.{binding.attr}") is not None
            self_import = binding.target == dotted and binding.attr == name  # `from . import x` in x's package
            if submodule and (self_import or binding.attr not in self.namespace(binding.target)):
                raise LookupError(f"aiter.{public}: {step} imports a module, not a function")
            return self.resolve(binding.target, binding.attr, public, via + (step,))
        what = {
            "conditional": "inside a conditional block, so which value it has depends on run time",
            "module": "an import of a module",
            "external": "an import from outside the aiter package",
            "other": "a class or an assignment, not a `def`",
        }[binding.kind]
        raise LookupError(f"aiter.{public}: {step} binds {name!r} by {what}; cannot read a signature statically")


@functools.lru_cache(maxsize=None)
def _source_tree(root: Path) -> _SourceTree:
    return _SourceTree(root)


def resolve_public_function(name: str, root: Optional[Path] = None) -> FunctionSignature:
    """The ``def`` that ``aiter.<name>`` is in the wheel, found with ``ast`` only.

    Decorators are assumed to keep the signature (aiter's ``@compile_ops`` uses
    ``functools.wraps``); they are listed in the result.
    """
    root = Path(root) if root is not None else aiter_source_root()
    tree = _source_tree(root.resolve())
    return tree.resolve(tree.package, name, public=name)


class _Arg:
    def __init__(self, label: str):
        self.label = label

    def __repr__(self) -> str:
        return self.label


def check_call(
    name: str, args_count: int, kwarg_names: Iterable[str] = (), root: Optional[Path] = None
) -> inspect.BoundArguments:
    """Assert that ``aiter.<name>(<args_count positionals>, **{kwarg_names})`` binds.

    Returns the binding (parameter name -> ``<arg i>`` / ``<kw k>``), so a caller
    can also check which parameter each argument lands on.
    """
    kwargs = list(kwarg_names)
    sig = resolve_public_function(name, root)
    shape = ", ".join([f"<arg {i}>" for i in range(args_count)] + [f"{k}=..." for k in kwargs])
    dupes = sorted({k for k in kwargs if kwargs.count(k) > 1})
    if dupes:
        raise AssertionError(f"aiter.{name}({shape}) repeats keyword(s) {dupes}")
    try:
        return sig.inspect_signature().bind(
            *[_Arg(f"<arg {i}>") for i in range(args_count)], **{k: _Arg(f"<kw {k}>") for k in kwargs}
        )
    except TypeError as err:
        raise AssertionError(
            f"aiter.{name}({shape}) does not bind to the wheel's signature: {err}\n  {sig.describe()}"
        ) from None


def signature_mismatches(func, wheel: FunctionSignature) -> list[str]:
    """How ``func``'s parameters differ from the wheel's (names, kinds, defaults); [] if they match."""
    ours = list(inspect.signature(func).parameters.values())
    theirs = list(wheel.params)
    problems = []
    if [p.name for p in ours] != [p.name for p in theirs]:
        problems.append(f"parameter names {[p.name for p in ours]} != wheel's {[p.name for p in theirs]}")
    for mine, real in zip(ours, theirs):
        if KIND_NAMES[mine.kind] != real.kind:
            problems.append(f"{mine.name}: kind {KIND_NAMES[mine.kind]} != wheel's {real.kind}")
        has_default = mine.default is not inspect.Parameter.empty
        if has_default != real.has_default:
            problems.append(
                f"{mine.name}: {'has' if has_default else 'no'} default, wheel's "
                f"{'has ' + real.default if real.has_default else 'has none'}"
            )
        elif has_default:
            try:
                expected = ast.literal_eval(real.default)
                same = type(expected) is type(mine.default) and expected == mine.default
            except ValueError:
                same = repr(mine.default) == real.default
            if not same:
                problems.append(f"{mine.name}: default {mine.default!r} != wheel's {real.default}")
    return problems


# --------------------------------------------------------------------------
# Adapter modules: every `_aiter().NAME(...)` call
# --------------------------------------------------------------------------
ACCESSOR = "_aiter"
ADAPTER_PACKAGE = "vllm_rocm_accel.backends.aiter"


@dataclass(frozen=True)
class AiterCall:
    name: str
    args_count: int
    kwarg_names: tuple[str, ...]
    lineno: int
    source: str


@dataclass(frozen=True)
class AdapterScan:
    filename: str
    calls: tuple[AiterCall, ...]
    problems: tuple[str, ...]  # aiter uses the scan cannot check; each fails the check


def _is_accessor_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == ACCESSOR


def _imports_aiter(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name == "aiter" or a.name.startswith("aiter.") for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and node.module is not None and (node.module == "aiter" or node.module.startswith("aiter."))
    return False


def scan_adapter_source(source: str, filename: str = "<adapter>") -> AdapterScan:
    """Every ``_aiter().NAME(...)`` call in an adapter's source, and every other use of aiter.

    The accessor ``_aiter()`` must be called directly and immediately called
    through (``_aiter().NAME(args)``); binding it (``a = _aiter()``), star
    arguments, ``import aiter`` outside the accessor and ``import_module("aiter")``
    are reported as problems, so no aiter call escapes the signature check.
    """
    tree = ast.parse(source, filename=filename)
    calls: list[AiterCall] = []
    problems: list[str] = []
    direct: set[int] = set()  # id() of the `_aiter()` nodes used as `_aiter().NAME(...)`
    as_callee: set[int] = set()  # id() of `_aiter` Name nodes that are called

    def at(node: ast.AST) -> str:
        return f"{filename}:{getattr(node, 'lineno', '?')}"

    for node in ast.walk(tree):
        if _is_accessor_call(node):
            as_callee.add(id(node.func))
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_accessor_call(node.func.value)):
            continue
        inner = node.func.value
        direct.add(id(inner))
        text = ast.unparse(node)
        if inner.args or inner.keywords:
            problems.append(f"{at(node)}: `{text}`: {ACCESSOR}() takes no arguments")
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            problems.append(f"{at(node)}: `{text}` passes *args/**kwargs, which cannot be checked statically")
            continue
        calls.append(AiterCall(node.func.attr, len(node.args), tuple(k.arg for k in node.keywords), node.lineno, text))

    accessor_defs = []
    for node in ast.walk(tree):
        if _is_accessor_call(node) and id(node) not in direct:
            problems.append(f"{at(node)}: `{ACCESSOR}()` used other than as `{ACCESSOR}().NAME(...)`; such calls are not checked")
        elif isinstance(node, ast.Name) and node.id == ACCESSOR and isinstance(node.ctx, ast.Load) and id(node) not in as_callee:
            problems.append(f"{at(node)}: `{ACCESSOR}` referenced without being called; its calls would not be checked")
        elif isinstance(node, ast.Call):
            fn = node.func
            fname = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
            first = node.args[0] if node.args else None
            if fname in ("import_module", "__import__") and isinstance(first, ast.Constant) and str(first.value).split(".")[0] == "aiter":
                problems.append(f"{at(node)}: `{ast.unparse(node)}` imports aiter dynamically; use `{ACCESSOR}().NAME(...)`")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == ACCESSOR:
            accessor_defs.append(node)

    inside_accessor = {id(n) for d in accessor_defs for n in ast.walk(d)}
    for node in ast.walk(tree):
        if _imports_aiter(node) and id(node) not in inside_accessor:
            problems.append(f"{at(node)}: `{ast.unparse(node)}` outside {ACCESSOR}(); aiter calls must go through `{ACCESSOR}().NAME(...)`")
    for d in accessor_defs:
        body = [s for s in d.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        simple = (
            len(body) == 2
            and isinstance(body[0], ast.Import) and [(a.name, a.asname) for a in body[0].names] == [("aiter", None)]
            and isinstance(body[1], ast.Return) and isinstance(body[1].value, ast.Name) and body[1].value.id == "aiter"
        )
        if not simple:
            problems.append(f"{at(d)}: `def {ACCESSOR}` must be just `import aiter; return aiter`")
    calls.sort(key=lambda c: c.lineno)
    return AdapterScan(filename, tuple(calls), tuple(problems))


def adapter_module_path(module: str) -> Path:
    base = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no source for {module} under {REPO_ROOT}")


def scan_adapter_module(module: str) -> AdapterScan:
    path = adapter_module_path(module)
    return scan_adapter_source(path.read_text(encoding="utf-8"), path.relative_to(REPO_ROOT).as_posix())


def adapter_call_bindings(module: str) -> list[tuple[str, dict[str, str]]]:
    """Each ``_aiter().NAME(...)`` call in ``module`` (in ``ast.walk`` order): ``(NAME, {parameter:
    argument source text})``, bound to the wheel's signature, so a test can say which argument
    lands on which parameter."""
    tree = ast.parse(adapter_module_path(module).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Call) and getattr(node.func.value.func, "id", None) == ACCESSOR):
            sig = resolve_public_function(node.func.attr).inspect_signature()
            bound = sig.bind(*[ast.unparse(a) for a in node.args], **{kw.arg: ast.unparse(kw.value) for kw in node.keywords})
            found.append((node.func.attr, dict(bound.arguments)))
    return found


def assert_adapter_bindings(module: str, expected: dict[str, dict[str, str]]) -> None:
    """Each aiter call in ``module`` puts ``expected[NAME][parameter]`` (argument source text) on each
    parameter listed for its NAME, and the NAMEs called are exactly ``expected``'s."""
    seen = set()
    for name, args in adapter_call_bindings(module):
        seen.add(name)
        for param, src in expected[name].items():
            assert args.get(param) == src, f"aiter.{name}: {param} gets {args.get(param)!r}, expected {src!r}"
    assert seen == set(expected)


def discover_aiter_adapter_modules() -> list[str]:
    """Modules under ``vllm_rocm_accel/backends/aiter`` that touch aiter (calls, accessor or imports)."""
    pkg = adapter_module_path(ADAPTER_PACKAGE).parent
    found = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(REPO_ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        source = path.read_text(encoding="utf-8")
        scan = scan_adapter_source(source, str(path))
        if scan.calls or scan.problems or ACCESSOR in source:
            found.append(".".join(parts))
    return found


def check_adapter_module(module: str, root: Optional[Path] = None) -> tuple[AiterCall, ...]:
    """Assert every aiter call in ``module`` binds to the wheel; report all failures at once."""
    scan = scan_adapter_module(module)
    failures = list(scan.problems)
    if not scan.calls and not scan.problems:
        failures.append(f"{scan.filename}: no `{ACCESSOR}().NAME(...)` calls found; is it an aiter adapter?")
    for call in scan.calls:
        try:
            check_call(call.name, call.args_count, call.kwarg_names, root)
        except (AssertionError, LookupError) as err:
            failures.append(f"{scan.filename}:{call.lineno}: `{call.source}`:\n    {err}")
    if failures:
        raise AssertionError(f"{module}: aiter calls that do not check against {AITER_REQUIREMENT}:\n  " + "\n  ".join(failures))
    return scan.calls
