"""Compression plans: which spec each (layer, module) gets, as data.

Owns layer-set parsing ("70-79", "last:5"), specs from options (`spec_with`), the `Plan` total
map, the presets uniform / selective / ultra (budget: `calderalab.budget`), plan files (JSON or
YAML: a base spec plus rules, first match wins), validation against module shapes, hashing for
provenance, and a plan's bits per weight (each module counted by `core.expected_bpw`). Imports
`calderalab.core` and nothing heavier; never transformers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from calderalab import core
from calderalab.errors import PlanError, did_you_mean

ModuleKey = tuple[int, str]  # (layer index, canonical module name)
PLAN_FORMAT_VERSION = 1

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_EDGE = re.compile(r"^(first|last)\s*:\s*(\d+)$")


def _check_layer(layer: int, n_layers: int, token: str) -> int:
    if not 0 <= layer < n_layers:
        raise PlanError(f"layer {layer} out of range in {token!r}: model has {n_layers} layers (0-{n_layers - 1})")
    return layer


def parse_layer_set(text: str, n_layers: int) -> tuple[int, ...]:
    """Parse a layer set into sorted unique layer indices.

    Forms, comma-separated and mixable: "23" · "70-79" (inclusive) · "first:3" · "last:5".
    "" or "none" is the empty set. Example: parse_layer_set("0-2,last:2", 30) == (0, 1, 2, 28, 29).
    Raises PlanError naming the offending token and the model's layer count.
    """
    if n_layers <= 0:
        raise PlanError(f"n_layers must be positive, got {n_layers}")
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    layers: set[int] = set()
    for raw in text.split(","):
        token = raw.strip()
        if token.isdigit():
            layers.add(_check_layer(int(token), n_layers, token))
        elif m := _RANGE.match(token):
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise PlanError(f"layer range {token!r} is reversed: write {hi}-{lo}")
            _check_layer(lo, n_layers, token), _check_layer(hi, n_layers, token)
            layers.update(range(lo, hi + 1))
        elif m := _EDGE.match(token):
            count = int(m.group(2))
            if not 0 < count <= n_layers:
                raise PlanError(f"{token!r} asks for {count} layers: model has {n_layers} layers (0-{n_layers - 1})")
            layers.update(range(count) if m.group(1) == "first" else range(n_layers - count, n_layers))
        else:
            raise PlanError(
                f"cannot parse layer token {token!r} in {text!r}: use N, A-B, first:N or last:N, comma-separated"
            )
    return tuple(sorted(layers))


def parse_rank_map(text: str, n_layers: int) -> dict[int, int]:
    """Parse "23:256,24:256,25:128" into {layer: rank}; layers checked against n_layers."""
    ranks: dict[int, int] = {}
    for raw in text.split(","):
        token = raw.strip()
        m = re.match(r"^(\d+)\s*:\s*(\d+)$", token)
        if not m:
            raise PlanError(f"cannot parse rank token {token!r} in {text!r}: use LAYER:RANK, comma-separated")
        layer, rank = _check_layer(int(m.group(1)), n_layers, token), int(m.group(2))
        if rank <= 0:
            raise PlanError(f"rank must be positive in {token!r}")
        if layer in ranks and ranks[layer] != rank:
            raise PlanError(f"layer {layer} given two ranks ({ranks[layer]} and {rank}) in {text!r}")
        ranks[layer] = rank
    return ranks


def check_module_name(name: str) -> str:
    if name not in core.MODULE_NAMES:
        raise PlanError(f"unknown module name {name!r}: valid names are {', '.join(core.MODULE_NAMES)}")
    return name


def _refuse_unknown(given: Any, known: Any, where: str, what: str) -> None:
    if unknown := sorted(set(given) - set(known)):
        hint = did_you_mean(unknown, known)
        raise PlanError(f"{where}: unknown {what}(s) {unknown}{hint}; valid {what}s are {sorted(known)}")


def override_spec(spec: Any, partial: Mapping[str, Any], where: str = "override") -> Any:
    """Return `spec` with the fields in `partial` replaced; unknown fields or bad values → PlanError."""
    base = spec.to_dict()
    _refuse_unknown(partial, base, where, "spec field")
    return spec_from_dict({**base, **partial}, where)


def spec_from_dict(data: Mapping[str, Any], where: str = "spec") -> Any:
    """CompressionSpec.from_dict with bits checked and ValueError turned into a PlanError naming `where`."""
    _refuse_unknown(data, core.CompressionSpec.__dataclass_fields__, where, "spec field")
    bits = data.get("bits")
    if bits is not None and not (isinstance(bits, int) and 2 <= bits <= 8):
        raise PlanError(f"{where}: bits={bits!r} is outside 2-8")
    try:
        return core.CompressionSpec.from_dict(dict(data))
    except (TypeError, ValueError) as err:
        raise PlanError(f"{where}: invalid spec {dict(data)}: {err}") from err


def spec_with(base: Any = None, **fields: Any) -> Any:
    """`base` (None: CompressionSpec's defaults, `bits` required) with every field that is not None
    replaced. A spec given no method gets it here, and only here: CALDERA (Q + L·R) when its rank is
    > 0, else LDLQ; a base keeps its method when neither is given. Bad values: ValueError."""
    given = {k: v for k, v in fields.items() if v is not None}
    if "method" not in given and ("rank" in given or base is None):
        given["method"] = "caldera" if given.get("rank", 0) > 0 else "ldlq"
    if base is None:
        if "bits" not in given:
            raise ValueError("a compression spec needs bits: give --bits (and --rank for CALDERA)")
        return core.CompressionSpec(**given)
    return dataclasses.replace(base, **given)


@dataclass(frozen=True)
class Plan:
    """A total map (layer, module) -> CompressionSpec, or None for a protected module (method `none`).

    `entries` is sorted by (layer, MODULE_NAMES order) and covers every layer in
    range(n_layers) and every name in MODULE_NAMES exactly once. `preset` is a label only
    (not part of the hash: two plans with the same map are the same plan).
    """

    n_layers: int
    entries: tuple[tuple[ModuleKey, Any], ...]
    preset: str = "custom"
    _index: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        order = {name: i for i, name in enumerate(core.MODULE_NAMES)}
        for (layer, name), _ in self.entries:
            check_module_name(name)
            _check_layer(layer, self.n_layers, f"{layer}.{name}")
        keys = [key for key, _ in self.entries]
        expected = [(layer, name) for layer in range(self.n_layers) for name in core.MODULE_NAMES]
        if sorted(keys, key=lambda k: (k[0], order[k[1]])) != expected:
            missing = sorted(set(expected) - set(keys))
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            raise PlanError(f"plan is not a total map: missing {missing[:5]}, duplicated {dupes[:5]}")
        ordered = tuple(sorted(self.entries, key=lambda e: (e[0][0], order[e[0][1]])))
        object.__setattr__(self, "entries", ordered)
        object.__setattr__(self, "_index", dict(ordered))

    def spec(self, layer: int, name: str) -> Any:
        """The spec for one module, or None when it is protected."""
        key = (layer, check_module_name(name))
        if key not in self._index:
            _check_layer(layer, self.n_layers, f"{layer}.{name}")
        return self._index[key]

    def items(self) -> tuple[tuple[ModuleKey, Any], ...]:
        return self.entries

    def compressed(self) -> tuple[tuple[ModuleKey, Any], ...]:
        """The (key, spec) pairs that are compressed (spec is not None)."""
        return tuple((k, s) for k, s in self.entries if s is not None)

    def protected_layers(self) -> tuple[int, ...]:
        """Layers whose every module keeps the original weights."""
        return tuple(
            layer for layer in range(self.n_layers) if all(self._index[(layer, n)] is None for n in core.MODULE_NAMES)
        )

    def validate(self, shapes: Mapping[ModuleKey, tuple[int, int]]) -> None:
        """Check the plan fits a model whose module shapes are `shapes[(layer, name)] = (d_out, d_in)`."""
        for (layer, name), spec in self.compressed():
            if (layer, name) not in shapes:
                raise PlanError(f"no shape for module {layer}.{name}: the model has no such target module")
            d_out, d_in = shapes[(layer, name)]
            if spec.rank > min(d_out, d_in):
                raise PlanError(
                    f"module {layer}.{name} ({d_out}x{d_in}): rank {spec.rank} exceeds min(d_out, d_in) = "
                    f"{min(d_out, d_in)}; lower the rank for this layer"
                )
        extra = sorted(k for k in shapes if k[0] >= self.n_layers)
        if extra:
            raise PlanError(f"model has modules {extra[:3]} beyond the plan's {self.n_layers} layers")

    def canonical(self) -> dict[str, Any]:
        """The plan as plain JSON data: distinct specs by key, then one row per module."""
        specs = {s.key(): s.to_dict() for _, s in self.compressed()}
        rows = [[layer, name, None if s is None else s.key()] for (layer, name), s in self.entries]
        return {"format_version": PLAN_FORMAT_VERSION, "n_layers": self.n_layers, "specs": specs, "modules": rows}

    def hash(self) -> str:
        """sha256 hex of the canonical JSON (sorted keys, no whitespace): stable across processes."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps({**self.canonical(), "preset": self.preset}, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        data = json.loads(text)
        if data.get("format_version") != PLAN_FORMAT_VERSION:
            raise PlanError(f"plan format_version {data.get('format_version')!r} unsupported (want {PLAN_FORMAT_VERSION})")
        specs = {key: spec_from_dict(d, f"spec {key}") for key, d in data["specs"].items()}
        entries = tuple(((int(l), n), None if k is None else specs[k]) for l, n, k in data["modules"])
        return cls(int(data["n_layers"]), entries, data.get("preset", "custom"))


# ---------------------------------------------------------------- presets


def _build(n_layers: int, spec_for, preset: str) -> Plan:
    entries = tuple(((l, n), spec_for(l, n)) for l in range(n_layers) for n in core.MODULE_NAMES)
    return Plan(n_layers, entries, preset)


def uniform_plan(n_layers: int, spec: Any) -> Plan:
    """One spec for every module of every layer."""
    return _build(n_layers, lambda l, n: spec, "uniform")


def selective_plan(n_layers: int, spec: Any, protect: str | tuple[int, ...]) -> Plan:
    """Uniform, except every module of the protected layers keeps its original weight."""
    layers = parse_layer_set(protect, n_layers) if isinstance(protect, str) else tuple(protect)
    for layer in layers:
        _check_layer(layer, n_layers, str(layer))
    protected = set(layers)
    return _build(n_layers, lambda l, n: None if l in protected else spec, "selective")


def ultra_plan(n_layers: int, spec: Any, ranks: str | Mapping[int, int]) -> Plan:
    """Uniform, except the listed layers keep CALDERA with their own rank ("23:256,24:128")."""
    rank_map = parse_rank_map(ranks, n_layers) if isinstance(ranks, str) else dict(ranks)
    per_layer = {}
    for layer, rank in rank_map.items():
        _check_layer(layer, n_layers, f"{layer}:{rank}")
        per_layer[layer] = override_spec(spec, {"method": "caldera", "rank": rank}, f"ultra layer {layer}")
    return _build(n_layers, lambda l, n: per_layer.get(l, spec), "ultra")


# ---------------------------------------------------------------- rules and plan files

RuleMode = Literal["ordered", "set"]


@dataclass(frozen=True)
class PlanRule:
    """One rule of a plan file: which modules it matches and what it sets.

    A module "layer.module" matches when its layer is in `layers` (None = any), its name is
    in `modules` (None = any) and `pattern` (a regex, None = any) fully matches "layer.module".
    `protect=True` maps it to None; otherwise `override` is merged into the base spec.
    """

    label: str
    layers: tuple[int, ...] | None = None
    modules: tuple[str, ...] | None = None
    pattern: str | None = None
    override: tuple[tuple[str, Any], ...] = ()
    protect: bool = False

    def __post_init__(self) -> None:
        for name in self.modules or ():
            check_module_name(name)
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise PlanError(f"rule {self.label}: bad regex {self.pattern!r}: {err}") from err
        if self.protect and self.override:
            raise PlanError(f"rule {self.label}: a protecting rule (spec: none) cannot also override fields")

    def matches(self, layer: int, name: str) -> bool:
        return (
            (self.layers is None or layer in self.layers)
            and (self.modules is None or name in self.modules)
            and (self.pattern is None or re.fullmatch(self.pattern, f"{layer}.{name}") is not None)
        )

    def apply(self, base: Any) -> Any:
        return None if self.protect else override_spec(base, dict(self.override), f"rule {self.label}")


def resolve_spec(layer: int, name: str, base: Any, rules: tuple[PlanRule, ...], mode: RuleMode = "ordered") -> Any:
    """The spec of one module: the first matching rule wins; no match gives `base`.

    In mode "set" the rules are an unordered set: every matching rule must give the same
    spec, otherwise PlanError names the module and the two disagreeing rules.
    """
    hits = [rule for rule in rules if rule.matches(layer, name)]
    if not hits:
        return base
    first = hits[0].apply(base)
    if mode == "set":
        for other in hits[1:]:
            if other.apply(base) != first:
                raise PlanError(
                    f"module {layer}.{name}: rules {hits[0].label} and {other.label} overlap and disagree; "
                    "make them disjoint or declare mode: ordered (first match wins)"
                )
    return first


def _rule_from_dict(data: Mapping[str, Any], index: int, n_layers: int, where: str = "plan file") -> PlanRule:
    label = f"#{index} {data.get('name', '')}".strip()
    _refuse_unknown(data, {"name", "layers", "modules", "match", "spec"}, f"{where}, rule {label}", "key")
    layers = data.get("layers")
    if layers is not None:
        layers = parse_layer_set(str(layers), n_layers) if not isinstance(layers, list) else tuple(layers)
        for layer in layers:
            _check_layer(int(layer), n_layers, f"rule {label}")
    modules = data.get("modules")
    if isinstance(modules, str):
        modules = [m.strip() for m in modules.split(",")]
    spec = data.get("spec", {})
    protect = spec is None or (isinstance(spec, str) and spec.lower() == "none")
    if not protect and not isinstance(spec, Mapping):
        raise PlanError(f"rule {label}: spec must be a mapping of fields or 'none', got {spec!r}")
    override = () if protect else tuple(sorted(spec.items()))
    return PlanRule(label, layers, tuple(modules) if modules else None, data.get("match"), override, protect)


def plan_from_dict(data: Mapping[str, Any], n_layers: int | None = None, where: str = "plan file") -> Plan:
    """Build a plan from plan-file data: {n_layers?, mode?, base: {...}, rules: [...]}; errors name `where`."""
    _refuse_unknown(data, {"n_layers", "mode", "base", "rules", "preset"}, where, "key")
    n_layers = n_layers if n_layers is not None else data.get("n_layers")
    if not isinstance(n_layers, int):
        raise PlanError(f"{where} has no n_layers: add `n_layers: N` or pass the model's layer count")
    if data.get("n_layers") not in (None, n_layers):
        raise PlanError(f"{where} is for {data['n_layers']} layers but the model has {n_layers}")
    mode = data.get("mode", "ordered")
    if mode not in ("ordered", "set"):
        raise PlanError(f"{where}: mode {mode!r} must be 'ordered' or 'set'")
    if "base" not in data:
        raise PlanError(f"{where} has no base spec: add `base: {{method: caldera, bits: 3, rank: 64}}`")
    base = spec_from_dict(data["base"], f"{where}, base spec")
    rules = tuple(_rule_from_dict(r, i, n_layers, where) for i, r in enumerate(data.get("rules") or []))
    return _build(n_layers, lambda l, n: resolve_spec(l, n, base, rules, mode), data.get("preset", "custom"))


def load_plan(path: str | Path, n_layers: int | None = None) -> Plan:
    """Load a plan file: `*.json` is either a Plan.to_json() dump or plan-file data; else YAML."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PlanError(f"plan file {path} not found")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        mark = getattr(err, "problem_mark", None)  # YAML errors span lines: keep the problem and where
        detail = f"{getattr(err, 'problem', err)} at line {mark.line + 1}, column {mark.column + 1}" if mark else err
        raise PlanError(f"plan file {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {detail}") from err
    if not isinstance(data, Mapping):
        raise PlanError(f"plan file {path}: top level must be a mapping")
    if "modules" in data and "specs" in data:
        plan = Plan.from_json(text if path.suffix == ".json" else json.dumps(data))
        if n_layers is not None and plan.n_layers != n_layers:
            raise PlanError(f"plan file {path} is for {plan.n_layers} layers but the model has {n_layers}")
        return plan
    return plan_from_dict(data, n_layers, where=f"plan file {path}")


# ---------------------------------------------------------------- bits per weight

@dataclass(frozen=True)
class PlanBpw:
    """Bits per weight of a whole plan, weighted by parameter count.

    `bpw_fp16` counts protected modules as 16 bits (an fp16/bf16 checkpoint); `bpw_fp32`
    as 32 (the float32 weights a CPU run actually holds); `bpw_compressed_only` averages
    over compressed modules only (what the compression itself costs).
    """

    bpw_fp16: float
    bpw_fp32: float
    bpw_compressed_only: float
    n_params: int
    n_protected_params: int


def plan_bpw(plan: Plan, shapes: Mapping[ModuleKey, tuple[int, int]]) -> PlanBpw:
    """Parameter-weighted bpw of `plan` on modules of the given (d_out, d_in) shapes."""
    plan.validate(shapes)
    compressed_bits = protected = compressed = 0.0
    for (layer, name), spec in plan.items():
        d_out, d_in = shapes[(layer, name)]
        n = d_out * d_in
        if spec is None:
            protected += n
        else:
            compressed += n
            compressed_bits += core.expected_bpw(spec, d_out, d_in) * n
    total = protected + compressed
    return PlanBpw(
        bpw_fp16=(compressed_bits + 16 * protected) / total,
        bpw_fp32=(compressed_bits + 32 * protected) / total,
        bpw_compressed_only=compressed_bits / compressed if compressed else float("nan"),
        n_params=int(total),
        n_protected_params=int(protected),
    )
