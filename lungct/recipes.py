"""Recipes: the YAML files in pipelines/, checked against their base, and chains of MONAI transforms.

A recipe `extends:` a base and changes only what differs: a mapping replaces the base's values key by
key, anything else replaces the value; `set:` and `--set` change single values ("a.b": value, or
"Step.arg": value for a transform of the recipe's chain). The bases in pipelines/ hold every setting with
its default, so no code repeats a default, and every key is checked: a key the base does not have, a
value of the wrong type, a transform or argument that does not exist is refused with one line naming the
file, the key and the nearest valid one. A recipe without `extends:` is checked against the base of its
kind (a chain: preprocess; training: train-2d, train-3d or cxr-2d).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import inspect
import json
import time
from pathlib import Path

import yaml

from lungct.errors import LungctError
from lungct.keyed import TRANSFORMS
from lungct.modalities import load_all_transforms

PACKAGE_PIPELINES = Path(__file__).parent / "pipelines"
SOURCE_PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
BASES = ("preprocess", "train-2d", "train-3d", "cxr-2d")
OPEN_SECTIONS = ("labels", "network.args", "augment.lesions.params", "augment.opacities.params",  # the user's own keys
                 "augment.gastric.params", "augment.pleural_fluid.params", "data.case_weights")
RECORD_KEYS = ("name", "source", "extends", "set", "description")


def builtin_dir() -> Path:
    """Where the shipped recipes are: inside an installed package, or the source tree's pipelines/."""
    return PACKAGE_PIPELINES if PACKAGE_PIPELINES.is_dir() else SOURCE_PIPELINES


def recipe_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = builtin_dir() / f"{path.stem if path.suffix else name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(sorted(p.stem for p in builtin_dir().glob("*.yaml")))
    raise LungctError(name_or_path, f"no such recipe file or built-in recipe (built-in: {known})")


def _read(path: Path) -> dict:
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise LungctError(path, f"not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(recipe, dict):
        raise LungctError(path, "a recipe must be a mapping (with 'extends' or the settings of its kind)")
    return recipe


def base_of(recipe: dict) -> str:
    """The built-in base a recipe without `extends:` is checked against, by what it holds."""
    if "dim" not in recipe and "transforms" in recipe:
        return "preprocess"
    if recipe.get("modality") == "cxr":
        return "cxr-2d"
    return "train-3d" if recipe.get("dim") == 3 else "train-2d"


def load_recipe(name_or_path: str | Path = "preprocess", overrides: dict | None = None) -> dict:
    """The recipe as a checked dict: `extends` resolved, `set` and then `overrides` applied."""
    path = recipe_path(name_or_path)
    raw = _read(path)
    if "extends" in raw:
        parent = str(raw["extends"])
        sibling = path.parent / (parent if parent.endswith((".yaml", ".yml")) else f"{parent}.yaml")
        recipe = load_recipe(sibling if sibling.is_file() else parent)
    elif path.stem in BASES and path.parent == builtin_dir():
        recipe = {}
    else:
        recipe = load_recipe(base_of(raw))
    if recipe:
        merge(recipe, {k: v for k, v in raw.items() if k not in ("extends", "set")}, path)
        apply_overrides(recipe, raw.get("set") or {}, path)
    else:
        recipe = {k: v for k, v in raw.items() if k not in ("extends", "set")}
        for steps in _chains(recipe):
            for spec in steps:
                check_step(spec, path)
    recipe["name"] = raw.get("name", path.stem)
    recipe["source"] = str(path)
    apply_overrides(recipe, overrides or {}, path)
    return recipe


# ------------------------------------------------------------------------------------------- checking


def suggest_name(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(map(str, known)))})"


def _check_type(dotted: str, old, new, where) -> None:
    if old is None:
        return
    if isinstance(old, bool):
        ok = isinstance(new, bool)
    elif isinstance(old, (int, float)):
        ok = isinstance(new, (int, float)) and not isinstance(new, bool)
    else:
        ok = isinstance(new, type(old)) or (isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)))
    if not ok:
        raise LungctError(where, f"recipe key '{dotted}' must be {type(old).__name__}, got {new!r}")


def merge(recipe: dict, changes: dict, where, prefix: str = "") -> dict:
    """Apply `changes` onto `recipe` in place: known keys only, same types; mappings merge key by key."""
    for key, value in changes.items():
        dotted = f"{prefix}{key}"
        if key in RECORD_KEYS and not prefix:
            recipe[key] = value
            continue
        if key not in recipe:
            if prefix.rstrip(".") in OPEN_SECTIONS:
                recipe[key] = value
                continue
            raise LungctError(where, f"unknown recipe key '{dotted}'" + suggest_name(dotted, _keys(recipe, prefix)))
        old = recipe[key]
        if dotted in OPEN_SECTIONS and isinstance(value, dict):
            recipe[key] = copy.deepcopy(value)
        elif isinstance(old, dict) and isinstance(value, dict):
            merge(old, value, where, dotted + ".")
        else:
            _check_type(dotted, old, value, where)
            if key in ("transforms", "chain"):
                for spec in value:
                    check_step(spec, where)
            recipe[key] = copy.deepcopy(value)
    return recipe


def _keys(node: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        out.append(f"{prefix}{key}")
        if isinstance(value, dict) and f"{prefix}{key}" not in OPEN_SECTIONS:
            out += _keys(value, f"{prefix}{key}.")
    return out


def _chains(recipe: dict) -> list[list]:
    """The transform lists of a recipe: `transforms` (chain recipes) and `input.chain` (training)."""
    out = [recipe["transforms"]] if isinstance(recipe.get("transforms"), list) else []
    chain = (recipe.get("input") or {}).get("chain") if isinstance(recipe.get("input"), dict) else None
    return out + ([chain] if isinstance(chain, list) else [])


def chain_of(recipe: dict) -> list[dict]:
    """The chain a recipe runs: its `transforms`, or a training recipe's `input.chain`."""
    chains = _chains(recipe)
    if not chains:
        raise LungctError(recipe.get("source"), "recipe has no transform chain ('transforms' or 'input.chain')")
    return chains[0]


def apply_overrides(recipe: dict, overrides: dict, where) -> dict:
    """Set "Step.arg" (an argument of a transform in the chain) or "a.b" (a setting) in place, checked."""
    for dotted, value in overrides.items():
        head, _, rest = str(dotted).partition(".")
        steps = [s for chain in _chains(recipe) for s in chain if isinstance(s, dict) and s.get("name") == head]
        if steps and rest:
            for step in steps:
                params = parameters(resolve_transform(step["name"]))
                if rest not in params:
                    raise LungctError(where, f"{head} has no argument '{rest}'" + suggest_name(rest, params))
                step.setdefault("args", {})[rest] = value
            continue
        node, parts = recipe, str(dotted).split(".")
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                return _unknown(recipe, dotted, where)
            node = node[part]
        prefix = ".".join(parts[:-1])
        if parts[-1] not in node and prefix not in OPEN_SECTIONS:
            return _unknown(recipe, dotted, where)
        merge(node, {parts[-1]: value}, where, prefix + "." if prefix else "")
    return recipe


def _unknown(recipe: dict, dotted: str, where):
    names = [f"{s['name']}.<arg>" for chain in _chains(recipe) for s in chain if isinstance(s, dict) and "name" in s]
    raise LungctError(where, f"unknown recipe key '{dotted}'" + suggest_name(dotted, _keys(recipe) + names))


def parse_set_options(pairs) -> dict:
    """`--set key=value` options into a dict; values are parsed as YAML (numbers, true, null, lists)."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LungctError(None, f"--set expects key=value, got '{pair}'")
        out[key.strip()] = yaml.safe_load(value)
    return out


def recipe_digest(recipe: dict) -> str:
    """A short hash of what the recipe does (not where it came from), to tell outputs apart."""
    body = {k: v for k, v in recipe.items() if k != "source"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------ transforms


def resolve_transform(name: str):
    """The transform class a recipe names: lungct's own (registered by each modality's chain), else MONAI's."""
    if name not in TRANSFORMS:
        load_all_transforms()
    if name in TRANSFORMS:
        return TRANSFORMS[name]
    monai_transforms = _monai_transforms()
    if hasattr(monai_transforms, name):
        return getattr(monai_transforms, name)
    raise LungctError(None, f"recipe names an unknown transform '{name}' (neither lungct nor MONAI has it)")


def _monai_transforms():
    """MONAI's transforms, imported only for a recipe that names one: the import costs 1.7 s (lungct.keyed)."""
    import monai.transforms

    return monai.transforms


def parameters(cls) -> dict:
    """{argument: default} a transform takes, its parameter dataclass's fields included (PARAMS)."""
    out = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
           if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    params_class = getattr(cls, "PARAMS", None)
    if params_class is not None:
        out.update({f.name: f.default for f in dataclasses.fields(params_class)})
    return out


def check_step(spec, where) -> None:
    if not isinstance(spec, dict) or "name" not in spec:
        raise LungctError(where, f"each transform needs a 'name': got {spec!r}")
    unknown = set(spec) - {"name", "args"}
    if unknown:
        raise LungctError(where, f"transform {spec['name']}: unknown field(s) {sorted(unknown)} (name, args)")
    try:
        cls = resolve_transform(spec["name"])
    except LungctError as err:
        raise LungctError(where, err.reason + suggest_name(spec["name"], _known_transforms())) from None
    if cls.__module__.startswith("monai"):
        return  # MONAI's own transforms check their arguments when built
    params = parameters(cls)
    for arg in spec.get("args") or {}:
        if arg not in params:
            raise LungctError(where, f"{spec['name']} has no argument '{arg}'" + suggest_name(arg, params))


def _known_transforms() -> list[str]:
    load_all_transforms()
    return sorted(TRANSFORMS)


def resolved_step(spec: dict) -> dict:
    """The step with every argument spelled out (defaults included): what a checkpoint records, so a later
    change of a default in code cannot change how a trained model's input is made."""
    cls = resolve_transform(spec["name"])
    if cls.__module__.startswith("monai"):
        return copy.deepcopy(spec)
    plain = (bool, int, float, str, type(None), list, tuple, dict)  # not e.g. a dtype: that stays the class's
    params = {k: v for k, v in parameters(cls).items() if isinstance(v, plain)}
    params.update(spec.get("args") or {})
    params.pop("allow_missing_keys", None)
    return {"name": spec["name"], "args": json.loads(json.dumps(params))}


class Chain:
    """Runs a list of transform specs in order and records each one's wall time in case['timings_s']."""

    def __init__(self, steps: list[dict], source=None):
        self.specs, self.source = steps, source
        self.steps = []
        for spec in steps:
            check_step(spec, source)
            cls = resolve_transform(spec["name"])
            try:
                self.steps.append((spec["name"], cls(**copy.deepcopy(spec.get("args") or {}))))
            except (TypeError, ValueError) as err:
                raise LungctError(source, f"bad arguments for {spec['name']}: {err}") from None

    @classmethod
    def of(cls, recipe: dict) -> "Chain":
        return cls(chain_of(recipe), recipe.get("source"))

    def _first(self, attribute: str):
        """The first step's value of a semantic attribute (lungct.keyed.KeyedTransform), or None."""
        return next((getattr(t, attribute) for _, t in self.steps if getattr(t, attribute, None) is not None), None)

    @property
    def window(self) -> dict | None:
        """The HU window the chain maps to the network's units."""
        return self._first("window")

    @property
    def spacing_mm(self):
        """The spacing the chain resamples to (None: not resampled)."""
        return self._first("target_spacing_mm")

    @property
    def roi_fill_hu(self) -> float | None:
        """What the image holds outside the lung ROI (None: the chain leaves it alone)."""
        return self._first("roi_fill_hu")

    @property
    def makes_roi(self) -> bool:
        return any(getattr(t, "roi_step", False) for _, t in self.steps)

    def without_roi(self) -> "Chain":
        """The chain without the steps that only make the ROI, unless the image needs the ROI."""
        if self.roi_fill_hu is not None:
            return self
        specs = [spec for spec, (_, t) in zip(self.specs, self.steps) if not getattr(t, "roi_step", False)]
        return Chain(specs, self.source)

    def __call__(self, data: dict) -> dict:
        timings = data.setdefault("case", {}).setdefault("timings_s", {})
        for name, transform in self.steps:
            start = time.perf_counter()
            data = transform(data)
            timings[name] = round(time.perf_counter() - start, 3)
        return data
