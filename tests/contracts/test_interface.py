"""The Python mirrors of ``contracts/IFLTaskRegistry.sol`` match it: enums, reason codes, errors, events.

The interface is compiled here (solcjs through ``toolchain/solc-shim.js``) for its AST, which gives
the enums' members, the NatSpec text (with the ``@custom:reason-codes`` table) and the compiler's
own error selectors and event topics. The ABI is the build output the Python client loads
(``fedoracle.chain.artifact``). What is checked:

- ``fedoracle.chain.Phase`` / ``Status`` (and the test harness's constants) have the enums'
  members, in order, as UPPER_SNAKE names;
- ``fedoracle.errors.Reason`` is the interface's reason-code table, and the deployed contract's
  ``REASON_*`` constants agree with that table;
- ``FLTaskRegistry``'s ABI is the interface's (no function, event or error outside it but
  OpenZeppelin's errors), and every error in it decodes through the client's decoder;
- every event the Python code (outside ``tests/``) tells apart by name exists, and every argument
  it reads from such an event is one of that event's arguments;
- every type, event, error and function of the interface carries NatSpec for each field/argument.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_abi import encode as abi_encode
from eth_utils import event_abi_to_log_topic, to_checksum_address

from fedoracle.chain import ChainEvent, Phase, Status, Submission, _ErrorDecoder, artifact
from fedoracle.errors import Reason

import fltask_harness

ROOT = Path(__file__).resolve().parents[2]
INTERFACE = "contracts/IFLTaskRegistry.sol"
IMPLEMENTATION = "contracts/FLTaskRegistry.sol"
# Top-level folders that hold no code which reads the registry's events.
NOT_SCANNED = {"tests", "toolchain", "docs", "results", "contracts"}

# --------------------------------------------------------------------------------------------------
# The compiler's view of the interface
# --------------------------------------------------------------------------------------------------


@cache
def _compiled() -> dict[str, Any]:
    """Solc's standard-JSON output (ASTs, ABIs, devdocs) for the registry and what it imports."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (./run sets it up)")
    remappings = yaml.safe_load((ROOT / "ape-config.yaml").read_text())["solidity"]["import_remapping"]
    request = {
        "language": "Solidity",
        "sources": {IMPLEMENTATION: {"content": (ROOT / IMPLEMENTATION).read_text()}},
        "settings": {"remappings": remappings, "outputSelection": {"*": {"*": ["abi", "devdoc"], "": ["ast"]}}},
    }
    proc = subprocess.run(
        [node, "toolchain/solc-shim.js", "--standard-json"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    out = json.loads(proc.stdout)
    errors = [e["formattedMessage"] for e in out.get("errors", []) if e["severity"] == "error"]
    assert not errors, "\n".join(errors)
    return out


def _interface_node() -> dict[str, Any]:
    unit = _compiled()["sources"][INTERFACE]["ast"]
    (node,) = [n for n in unit["nodes"] if n["nodeType"] == "ContractDefinition" and n["name"] == "IFLTaskRegistry"]
    assert node["contractKind"] == "interface"
    return node


def _members(kind: str) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in _interface_node()["nodes"] if n["nodeType"] == kind}


def _doc(node: dict[str, Any]) -> str:
    doc = node.get("documentation")
    return (doc["text"] if isinstance(doc, dict) else doc) or ""


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def _reason_table() -> list[tuple[int, str]]:
    """The rows ``code | NAME | meaning`` of the interface's ``@custom:reason-codes`` tag."""
    text = _doc(_interface_node())
    match = re.search(r"@custom:reason-codes\b(.*?)(?=^\s*@|\Z)", text, re.S | re.M)
    assert match, f"{INTERFACE} has no @custom:reason-codes table"
    rows = re.findall(r"^\s*(\d+)\s*\|\s*([A-Z][A-Z0-9_]*)\s*\|\s*\S", match.group(1), re.M)
    assert rows, "the @custom:reason-codes tag has no `code | NAME | meaning` rows"
    return [(int(code), name) for code, name in rows]


def _registry_abi() -> list[dict[str, Any]]:
    return artifact("FLTaskRegistry")["abi"]


def _type(param: dict[str, Any]) -> str:
    """The canonical ABI type of a parameter (tuples spelled out)."""
    if param["type"].startswith("tuple"):
        return "(" + ",".join(_type(c) for c in param["components"]) + ")" + param["type"][5:]
    return param["type"]


def _signature(item: dict[str, Any]) -> str:
    return f"{item['name']}({','.join(_type(i) for i in item['inputs'])})"


def _without_internal_types(x: Any) -> Any:
    """An ABI item without ``internalType`` (which names the declaring contract, not the encoding)."""
    if isinstance(x, dict):
        return {k: _without_internal_types(v) for k, v in x.items() if k != "internalType"}
    if isinstance(x, list):
        return [_without_internal_types(v) for v in x]
    return x


# --------------------------------------------------------------------------------------------------
# Enums and reason codes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mirror", [Phase, Status], ids=lambda e: e.__name__)
def test_python_enums_mirror_the_interface_enums(mirror):
    members = [m["name"] for m in _members("EnumDefinition")[mirror.__name__]["members"]]
    assert [(m.name, m.value) for m in mirror] == [(_upper_snake(n), i) for i, n in enumerate(members)]


def test_test_harness_constants_mirror_the_interface():
    phases = [m["name"] for m in _members("EnumDefinition")["Phase"]["members"]]
    statuses = [m["name"] for m in _members("EnumDefinition")["Status"]["members"]]
    for i, name in enumerate(phases):
        assert getattr(fltask_harness, _upper_snake(name)) == i, name
    for i, name in enumerate(statuses):
        assert getattr(fltask_harness, "S_" + _upper_snake(name)) == i, name
    table = dict((name, code) for code, name in _reason_table())
    assert fltask_harness.REASON_OK == table["OK"]
    assert fltask_harness.REASON_BELOW_THRESHOLD == table["BELOW_THRESHOLD"]
    assert fltask_harness.REASON_MAX == max(table.values())


def test_reason_table_is_consecutive_from_zero():
    codes = [code for code, _ in _reason_table()]
    assert codes == list(range(len(codes))), "reason codes are appended, never skipped or reordered"
    names = [name for _, name in _reason_table()]
    assert len(set(names)) == len(names)


def test_python_reasons_are_the_interface_table():
    assert [(r.value, r.name) for r in Reason] == _reason_table()


def test_contract_reason_constants_agree_with_the_table(registry):
    table = {name: code for code, name in _reason_table()}
    assert registry.REASON_OK() == table["OK"] == Reason.OK
    assert registry.REASON_BELOW_THRESHOLD() == table["BELOW_THRESHOLD"] == Reason.BELOW_THRESHOLD
    assert registry.REASON_MAX() == max(table.values()) == max(Reason)


# --------------------------------------------------------------------------------------------------
# ABI: the registry is the interface; errors decode; event topics match
# --------------------------------------------------------------------------------------------------


def test_registry_abi_is_the_interface_abi():
    iface = _compiled()["contracts"][INTERFACE]["IFLTaskRegistry"]["abi"]
    registry = _registry_abi()
    key = lambda item: json.dumps(_without_internal_types(item), sort_keys=True)  # noqa: E731
    for kind in ("function", "event"):
        assert sorted(key(i) for i in registry if i["type"] == kind) == sorted(
            key(i) for i in iface if i["type"] == kind
        ), f"{kind}s of FLTaskRegistry and IFLTaskRegistry differ"
    ours = {key(i) for i in iface if i["type"] == "error"}
    extra = sorted(_signature(i) for i in registry if i["type"] == "error" and key(i) not in ours)
    dependency_errors = {
        e["name"]
        for path, unit in _compiled()["sources"].items()
        if path.startswith("toolchain/node_modules/")
        for e in _walk(unit["ast"])
        if e.get("nodeType") == "ErrorDefinition"
    }
    assert all(sig.split("(")[0] in dependency_errors for sig in extra), f"errors outside the interface: {extra}"
    assert ours <= {key(i) for i in registry if i["type"] == "error"}
    assert not [i["type"] for i in registry if i["type"] not in ("function", "event", "error")]


def _walk(node: Any):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _compiler_error_selectors() -> dict[str, str]:
    """``name -> 0x selector`` for every error solc saw, as solc computed them."""
    return {
        n["name"]: "0x" + n["errorSelector"]
        for unit in _compiled()["sources"].values()
        for n in _walk(unit["ast"])
        if n.get("nodeType") == "ErrorDefinition"
    }


def _sample(param: dict[str, Any], i: int) -> Any:
    """A valid value for an ABI parameter (enums get a member, so the value means something)."""
    typ = param["type"]
    if typ.endswith("]"):
        inner = dict(param, type=typ[: typ.rindex("[")])
        size = typ[typ.rindex("[") + 1 : -1]
        return [_sample(inner, i + k) for k in range(int(size) if size else 2)]
    if typ.startswith("tuple"):
        return tuple(_sample(c, i + k) for k, c in enumerate(param["components"]))
    if typ.startswith("uint"):
        if param.get("internalType", "").startswith("enum "):
            return 1
        return min(1_000 + i, 2 ** int(typ[4:] or 256) - 1)
    if typ.startswith("int"):
        return -1_000 - i
    if typ == "address":
        return to_checksum_address(bytes([0x10 + i]) * 20)
    if typ == "bool":
        return True
    if typ == "string":
        return f"arg{i}"
    if typ == "bytes":
        return bytes([0xA0 + i, 0x01])
    if typ.startswith("bytes"):
        return bytes([0xA0 + i]) * int(typ[5:])
    raise AssertionError(f"no sample for ABI type {typ}: extend _sample")


def _shown(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


def test_every_abi_error_is_decoded_by_the_python_decoder():
    abi = _registry_abi()
    decoder = _ErrorDecoder(abi)
    selectors = _compiler_error_selectors()
    errors = [i for i in abi if i["type"] == "error"]
    assert len(errors) >= len(_members("ErrorDefinition"))
    for item in errors:
        values = [_sample(p, k) for k, p in enumerate(item["inputs"])]
        data = bytes.fromhex(selectors[item["name"]][2:]) + abi_encode([_type(p) for p in item["inputs"]], values)
        shown = ", ".join(f"{p['name']}={_shown(v)}" for p, v in zip(item["inputs"], values, strict=True))
        expected = f"{item['name']}({shown})"
        assert decoder.decode("0x" + data.hex()) == expected
        assert decoder.decode(data) == expected
    assert decoder.decode("0xdeadbeef").startswith("unknown revert")


def test_event_topics_are_the_compilers():
    topics = {n["name"]: n["eventSelector"] for n in _members("EventDefinition").values()}
    for item in (i for i in _registry_abi() if i["type"] == "event"):
        assert event_abi_to_log_topic(item).hex() == topics[item["name"]], item["name"]


# --------------------------------------------------------------------------------------------------
# Events the Python code listens for
# --------------------------------------------------------------------------------------------------


def _python_files() -> list[Path]:
    files = [p for p in ROOT.glob("*.py")]
    for top in sorted(ROOT.iterdir()):
        if top.is_dir() and not top.name.startswith(".") and top.name not in NOT_SCANNED:
            files += sorted(top.rglob("*.py"))
    return files


class _EventReads:
    """Which event names Python code compares ``<event>.name`` against, and which arguments it reads.

    The arguments are the ``<event>.args`` keys read in the branches so selected.

    Recognised: ``ev.name == "X"`` and ``ev.name in ("X", "Y")`` (also a module-level collection of
    names, ``ev.name in _PHASE_OF``), in ``if``/``elif`` tests and comprehension filters, and
    ``match ev.name: case "X" | "Y":``; arguments read as ``ev.args["k"]``, ``ev.args.get("k")``
    or through an alias (``a = ev.args``). A read outside any such branch only has to be an
    argument of some event.
    """

    def __init__(self) -> None:
        self.branches: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))  # event -> key -> where
        self.mentioned: dict[str, set[str]] = defaultdict(set)  # event -> where (any comparison)
        self.unscoped: dict[str, set[str]] = defaultdict(set)  # key -> where

    def scan(self, path: Path) -> None:
        tree = ast.parse(path.read_text(), filename=str(path))
        self._where = str(path.relative_to(ROOT))
        self._globals = self._name_collections(tree)
        self._aliases: dict[str, str] = {}
        self._visit(tree, None)

    @staticmethod
    def _name_collections(tree: ast.Module) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for stmt in tree.body:
            target = (
                stmt.targets[0]
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                else (stmt.target if isinstance(stmt, ast.AnnAssign) else None)
            )
            value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(target, ast.Name) and value is not None:
                elts = value.keys if isinstance(value, ast.Dict) else getattr(value, "elts", None)
                if isinstance(value, ast.Call) and value.args:  # frozenset({...})
                    elts = getattr(value.args[0], "elts", None)
                if elts and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elts):
                    out[target.id] = {e.value for e in elts}
        return out

    def _names(self, node: ast.expr) -> set[str] | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                return {e.value for e in node.elts}
        if isinstance(node, ast.Name) and node.id in self._globals:
            return self._globals[node.id]
        return None

    @staticmethod
    def _event_var(node: ast.expr) -> str | None:
        if isinstance(node, ast.Attribute) and node.attr == "name" and isinstance(node.value, ast.Name):
            return node.value.id
        return None

    def _selection(self, test: ast.expr, negated: bool = False) -> tuple[str, set[str]] | None:
        """``(event variable, names)`` when ``test`` holds only for those event names.

        With ``negated``: when ``test`` is false only for them, as in ``ev.name != "X" or ...``.
        """
        if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or if negated else ast.And):
            for value in test.values:
                if (found := self._selection(value, negated)) is not None:
                    return found
            return None
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and (var := self._event_var(test.left)):
            names = self._names(test.comparators[0])
            positive = (ast.NotEq, ast.NotIn) if negated else (ast.Eq, ast.In)
            if names is not None and isinstance(test.ops[0], positive):
                return var, names
        return None

    @staticmethod
    def _narrow(scope: tuple[str, set[str]] | None, selected: tuple[str, set[str]]) -> tuple[str, set[str]]:
        if scope is not None and scope[0] == selected[0]:
            return selected[0], scope[1] & selected[1]
        return selected

    def _note_mentions(self, node: ast.AST) -> None:
        if isinstance(node, ast.Compare) and self._event_var(node.left):
            for comparator in node.comparators:
                for name in self._names(comparator) or ():
                    if re.fullmatch(r"[A-Z][A-Za-z0-9]*", name):
                        self.mentioned[name].add(f"{self._where}:{node.lineno}")

    def _read_key(self, node: ast.AST) -> tuple[str, str] | None:
        """``(event variable, key)`` for ``X.args["k"]``, ``X.args.get("k")`` or ``alias["k"]``."""

        def args_of(expr: ast.expr) -> str | None:
            if isinstance(expr, ast.Attribute) and expr.attr == "args" and isinstance(expr.value, ast.Name):
                return expr.value.id
            if isinstance(expr, ast.Name):
                return self._aliases.get(expr.id)
            return None

        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
            and (var := args_of(node.value))
        ):
            return var, node.slice.value
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (var := args_of(node.func.value))
        ):
            return var, node.args[0].value
        return None

    def _record(self, node: ast.AST, scope: tuple[str, set[str]] | None) -> None:
        found = self._read_key(node)
        if found is None:
            return
        var, key = found
        where = f"{self._where}:{node.lineno}"
        if scope is not None and scope[0] == var:
            for name in scope[1]:
                self.branches[name][key].add(where)
        else:
            self.unscoped[key].add(where)

    def _visit(self, node: ast.AST, scope: tuple[str, set[str]] | None) -> None:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Attribute) and value.attr == "args" and isinstance(value.value, ast.Name):
                self._aliases[node.targets[0].id] = value.value.id
        self._note_mentions(node)
        self._record(node, scope)
        if isinstance(node, (ast.If, ast.IfExp)) and (selected := self._selection(node.test)) is not None:
            inner = self._narrow(scope, selected)
            self._visit(node.test, scope)
            for child in node.body if isinstance(node, ast.If) else [node.body]:
                self._visit(child, inner)
            for child in node.orelse if isinstance(node, ast.If) else [node.orelse]:
                self._visit(child, scope)
            return
        if isinstance(node, ast.BoolOp):
            # `ev.name == "X" and <rest>` / `ev.name != "X" or <rest>`: <rest> runs only for X.
            negated = isinstance(node.op, ast.Or)
            for k, value in enumerate(node.values):
                self._visit(value, scope)
                if (selected := self._selection(value, negated)) is not None:
                    inner = self._narrow(scope, selected)
                    for rest in node.values[k + 1 :]:
                        self._visit(rest, inner)
                    return
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            selected = next((s for g in node.generators for t in g.ifs if (s := self._selection(t))), None)
            if selected is not None:
                for child in ast.iter_child_nodes(node):
                    self._visit(child, self._narrow(scope, selected))
                return
        if isinstance(node, ast.Match) and (var := self._event_var(node.subject)):
            self._visit(node.subject, scope)
            for case in node.cases:
                names = self._pattern_names(case.pattern)
                if names:
                    for name in names:
                        self.mentioned[name].add(f"{self._where}:{case.pattern.lineno}")
                inner = (var, names) if names else scope
                for child in case.body:
                    self._visit(child, inner)
            return
        for child in ast.iter_child_nodes(node):
            self._visit(child, scope)

    @staticmethod
    def _pattern_names(pattern: ast.pattern) -> set[str] | None:
        if isinstance(pattern, ast.MatchValue) and isinstance(pattern.value, ast.Constant):
            return {pattern.value.value}
        if isinstance(pattern, ast.MatchOr):
            parts = [_EventReads._pattern_names(p) for p in pattern.patterns]
            return set().union(*parts) if all(parts) else None
        return None


@cache
def _event_reads() -> _EventReads:
    reads = _EventReads()
    for path in _python_files():
        reads.scan(path)
    return reads


def _abi_events() -> dict[str, list[str]]:
    return {i["name"]: [p["name"] for p in i["inputs"]] for i in _registry_abi() if i["type"] == "event"}


def test_the_scan_sees_the_events_the_roles_depend_on():
    """The scan itself works: the oracle and the relay cannot run without these."""
    reads = _event_reads()
    assert {"TaskPublished", "ModelSubmitted", "VerdictPosted", "RoundOpened"} <= set(reads.mentioned)
    assert {"round", "device", "accepted"} <= set(reads.branches["VerdictPosted"])


def test_every_event_the_python_code_listens_for_exists():
    events = _abi_events()
    missing = {name: sorted(where) for name, where in _event_reads().mentioned.items() if name not in events}
    assert not missing, f"Python code tells apart events the registry does not emit: {missing}"


def test_every_event_argument_the_python_code_reads_exists():
    events = _abi_events()
    reads = _event_reads()
    wrong = {
        f"{name}.{key}": sorted(where)
        for name, keys in reads.branches.items()
        if name in events
        for key, where in keys.items()
        if key not in events[name]
    }
    assert not wrong, f"arguments read from events that do not have them: {wrong}"
    every_argument = {arg for args in events.values() for arg in args}
    stray = {key: sorted(where) for key, where in reads.unscoped.items() if key not in every_argument}
    assert not stray, f"event arguments read that no event has: {stray}"


def test_submission_mirrors_the_event_and_the_struct():
    """``chain.Submission`` reads ``ModelSubmitted`` by name and writes the ``Submission`` struct in its field order.

    That is the order the on-chain commitment is checked in.
    """
    (event,) = [i for i in _registry_abi() if i["type"] == "event" and i["name"] == "ModelSubmitted"]
    args = {p["name"]: _sample(p, k) for k, p in enumerate(event["inputs"])}
    sub = Submission.from_event(ChainEvent("ModelSubmitted", args, 1, "0x", "0x", 0))
    members = [m["name"] for m in _members("StructDefinition")["Submission"]["members"]]
    assert sub.as_tuple() == tuple(args[m] for m in members)
    assert (sub.task_id, sub.round, sub.device, sub.model_uri) == (
        args["taskId"],
        args["round"],
        args["device"],
        args["modelURI"],
    )


# --------------------------------------------------------------------------------------------------
# NatSpec on every type, event, error and function of the interface
# --------------------------------------------------------------------------------------------------


def _natspec_gaps() -> list[str]:
    gaps: list[str] = []
    for node in _interface_node()["nodes"]:
        kind, name, doc = node["nodeType"], node.get("name"), _doc(node)
        if kind not in (
            "EnumDefinition",
            "StructDefinition",
            "EventDefinition",
            "ErrorDefinition",
            "FunctionDefinition",
        ):
            continue
        if "@notice" not in doc:
            gaps.append(f"{name}: no @notice")
        documented = set(re.findall(r"@param\s+(\w+)", doc))
        if kind == "EnumDefinition":
            fields = [m["name"] for m in node["members"]]
            gaps += [f"{name}.{f}: not described" for f in fields if f"{f}:" not in doc]
            continue
        params = node["members"] if kind == "StructDefinition" else node["parameters"]["parameters"]
        gaps += [f"{name}.{p['name']}: no @param" for p in params if p["name"] not in documented]
        if kind == "FunctionDefinition":
            returns = node["returnParameters"]["parameters"]
            if len(re.findall(r"@return\b", doc)) < len(returns):
                gaps.append(f"{name}: fewer @return than return values")
    return gaps


def test_interface_has_natspec_everywhere():
    assert not _natspec_gaps()
    assert _compiled()["contracts"][INTERFACE]["IFLTaskRegistry"]["devdoc"].get("custom:reason-codes")


def test_privacy_modes_are_the_interface_table(registry):
    """The on-chain privacy-mode codes are the index of fedoracle's DP_SCALINGS, in the table's order."""
    from fedoracle.defaults import DP_SCALINGS, privacy_mode_code, privacy_mode_name

    match = re.search(r"@custom:privacy-modes\b(.*?)(?=^\s*@|\Z)", _doc(_interface_node()), re.S | re.M)
    assert match, f"{INTERFACE} has no @custom:privacy-modes table"
    rows = [(int(c), n) for c, n in re.findall(r"^\s*(\d+)\s*\|\s*([a-z]+)\s*\|", match.group(1), re.M)]
    assert rows == list(enumerate(DP_SCALINGS))
    assert registry.PRIVACY_MODE_MAX() == len(DP_SCALINGS) - 1
    assert [privacy_mode_name(privacy_mode_code(m)) for m in DP_SCALINGS] == list(DP_SCALINGS)
    with pytest.raises(ValueError, match="unknown privacy mode"):
        privacy_mode_code("none")
