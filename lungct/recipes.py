"""Recipes: the YAML files in pipelines/ turned into chains of MONAI dictionary transforms.

A recipe lists transforms by name with their arguments; names resolve to lungct's transforms first,
then to monai.transforms. A recipe may `extends:` another and `set:` single values ("Step.key": value),
which is also how command-line options (`--set`, `--recalibrate`) reach a step.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import yaml

from lungct.errors import LungctError

PACKAGE_PIPELINES = Path(__file__).parent / "pipelines"
SOURCE_PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"


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


def load_recipe(name_or_path: str | Path = "preprocess", overrides: dict | None = None) -> dict:
    """The recipe as a dict with `extends` resolved and `overrides` ("Step.key" or "key": value) applied."""
    path = recipe_path(name_or_path)
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise LungctError(path, f"not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(recipe, dict):
        raise LungctError(path, "a recipe must be a mapping with a 'transforms' list or 'extends'")
    if "extends" in recipe:
        parent = str(recipe["extends"])
        sibling = path.parent / (parent if parent.endswith((".yaml", ".yml")) else f"{parent}.yaml")
        base = load_recipe(sibling if sibling.is_file() else parent)
        sets = recipe.get("set") or {}
        recipe = {**base, **{k: v for k, v in recipe.items() if k not in ("extends", "set")}}
        apply_overrides(recipe, sets, path)
    recipe.setdefault("name", path.stem)
    recipe["source"] = str(path)
    apply_overrides(recipe, overrides or {}, path)
    return recipe


def apply_overrides(recipe: dict, overrides: dict, where) -> dict:
    """Set "Step.key" (a transform argument) or "key" / "a.b" (top-level settings) in place."""
    for dotted, value in overrides.items():
        head, _, rest = str(dotted).partition(".")
        steps = [t for t in recipe.get("transforms", []) if t.get("name") == head]
        if steps and rest:
            for step in steps:
                step.setdefault("args", {})[rest] = value
            continue
        node = recipe
        parts = str(dotted).split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise LungctError(where, f"cannot set '{dotted}': no section '{part}' in the recipe")
            node = node[part]
        if parts[-1] not in node and "transforms" in recipe and not steps:
            names = ", ".join(t.get("name", "?") for t in recipe.get("transforms", []))
            raise LungctError(where, f"cannot set '{dotted}': no such setting or step (steps: {names})")
        node[parts[-1]] = value
    return recipe


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


def _resolve(name: str):
    from lungct.transforms import body, cxr, geometry, intensity, lungs, mirror

    for module in (intensity, geometry, body, lungs, mirror, cxr):
        if hasattr(module, name):
            return getattr(module, name)
    import monai.transforms

    if hasattr(monai.transforms, name):
        return getattr(monai.transforms, name)
    raise LungctError(None, f"recipe names an unknown transform '{name}' (neither lungct nor MONAI has it)")


class Chain:
    """Runs the recipe's transforms in order and records each one's wall time in case['timings_s']."""

    def __init__(self, recipe: dict):
        self.recipe = recipe
        self.steps = []
        for spec in recipe.get("transforms", []):
            if not isinstance(spec, dict) or "name" not in spec:
                raise LungctError(recipe.get("source"), f"each transform needs a 'name': got {spec!r}")
            cls = _resolve(spec["name"])
            try:
                self.steps.append((spec["name"], cls(**copy.deepcopy(spec.get("args") or {}))))
            except TypeError as err:
                raise LungctError(recipe.get("source"), f"bad arguments for {spec['name']}: {err}") from None

    def __call__(self, data: dict) -> dict:
        timings = data.setdefault("case", {}).setdefault("timings_s", {})
        for name, transform in self.steps:
            start = time.perf_counter()
            data = transform(data)
            timings[name] = round(time.perf_counter() - start, 3)
        return data
