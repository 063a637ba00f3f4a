"""``msgnn-bench profile NAME``: set ``profile:`` and the DVC matrix axes it decides in params.yaml
(including plugin_runs / score_runs, which follow run_datasets); ``msgnn-bench plugins sync``: only those two.

params.yaml is edited as a YAML document, not as text: ``dvc exp run -S`` and ``dvc exp apply``
rewrite the file with their own serializer (block lists, other quoting, comments moved into
column-aligned padding), and a line-based rewrite then splices a line into the middle of a list.
ruamel.yaml's round-trip mode is what DVC itself uses (``dvc.utils.serialize``), so whatever DVC
wrote parses here the same way, and comments, key order and quoting survive; only the values of
the keys below change, each in the style (flow ``[a, b]`` or block ``- a``) it already had.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

# The top-level keys `profile` owns, in file order: DVC matrix axes must be literal top-level
# lists (a matrix cannot read `profiles.${profile}.…`), so they are copies of the profile's values.
AXES = ("profile", "run_datasets", "seeds", "extra_seeds", "ablation_dataset", "ablation_variants",
        "ablation_groups", "official_runs", "plugin_runs", "score_runs")
# plugin_runs / score_runs (DVC foreach axes of the plugin and score stages) follow run_datasets: a
# profile switch rewrites them as `msgnn-bench plugins sync` does, else the new file would not validate.


def _yaml():
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    return y


def axes_for(raw: dict, name: str) -> dict:
    """The values `profile NAME` gives the AXES keys (from plain data: ``raw`` may be any mapping)."""
    from benchmark.core import ablations

    profiles = raw.get("profiles") or {}
    if name not in profiles:
        raise ValueError(f"unknown profile {name!r}; defined: {sorted(profiles)}")
    prof = profiles[name]
    seeds = [int(s) for s in prof.get("seeds", [0])]
    out = {"profile": name, "run_datasets": [str(d) for d in prof["datasets"]], "seeds": seeds,
           "extra_seeds": seeds[1:]}
    if "ablation" in prof:
        a = prof["ablation"]
        out.update(ablation_dataset=str(a["dataset"]), ablation_variants=[str(v) for v in a["variants"]],
                   ablation_groups=[str(g) for g in ablations.groups(a)])
    out["official_runs"] = _plain(prof.get("official") or {})  # the foreach axis of stage `official`
    return out


def _scalar(value, style=None) -> str:
    """``value`` as a YAML scalar that reads back as itself (in YAML 1.1 too: PyYAML reads the file
    for the stages), in the quoting style the old value had where there was one."""
    import json

    import yaml

    text = str(value)
    if style == "'" and isinstance(value, str):
        return "'" + text.replace("'", "''") + "'"
    if style == '"' or (isinstance(value, str) and (not re.fullmatch(r"[A-Za-z0-9_./-]+", text)
                                                    or yaml.safe_load(text) != value)):
        return json.dumps(text)
    return text


def _spans(text: str) -> dict:
    """Top-level key -> (start, end, kind, column, style) of its value in ``text``, from ruamel's
    parser events: kind is "scalar", "flow" or "block"; start/end are character offsets."""
    from ruamel.yaml import events as ev

    out, depth, key, cur, want_key, last_end = {}, 0, None, None, True, None
    for e in _yaml().parse(text):
        if isinstance(e, (ev.MappingStartEvent, ev.SequenceStartEvent)):
            if depth == 1 and not want_key:
                kind = "flow" if e.flow_style else "block"
                cur = [e.start_mark.index, None, kind, e.start_mark.column, None]
            depth += 1
        elif isinstance(e, (ev.MappingEndEvent, ev.SequenceEndEvent)):
            depth -= 1
            if depth == 1 and cur is not None:
                # a flow node ends at its closing bracket; a block one at its last item (its end
                # event sits at the next key, past any comment or blank line in between)
                cur[1] = e.end_mark.index if cur[2] == "flow" else (last_end or cur[0])
                out[key], cur, want_key = tuple(cur), None, True
        elif isinstance(e, (ev.ScalarEvent, ev.AliasEvent)):
            if depth == 1 and want_key:
                key, want_key = e.value, False
            elif depth == 1:
                out[key] = (e.start_mark.index, e.end_mark.index, "scalar", e.start_mark.column,
                            getattr(e, "style", None))
                want_key = True
        if depth >= 2 and hasattr(e, "end_mark"):
            last_end = e.end_mark.index
    return out


def _render(value, kind: str, column: int, style=None) -> str:
    if isinstance(value, dict):  # a mapping axis is written as one flow mapping
        import yaml

        flow = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, sort_keys=False).strip()
        return flow if kind != "block" or column > 0 else "  " + flow
    if not isinstance(value, list):
        return _scalar(value, style)
    if kind == "block" and value:  # one `- item` a line at the old list's column
        return ("\n" + " " * column).join(f"- {_scalar(v)}" for v in value)
    flow = "[" + ", ".join(_scalar(v) for v in value) + "]"
    # an empty list replacing a block one: a flow node on its own line must be indented past its key
    return flow if kind != "block" or column > 0 else "  " + flow


def plugin_axes(raw: dict, path: str | Path = "params.yaml") -> dict:
    """plugin_runs / score_runs for ``raw`` (its plugins:, the installed entry points, results and
    run_datasets); ``path``: the params file, whose folder the plugin paths are relative to."""
    from benchmark.core import config

    config.declare_plugins(raw, path)
    return {"plugin_runs": config.plugin_runs_for(raw), "score_runs": config.score_runs_for(raw)}


def _load(text: str):
    from ruamel.yaml import YAMLError

    try:
        old = _yaml().load(text)
    except YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from exc
    if not hasattr(old, "insert"):
        raise ValueError("must be a mapping of settings")
    return old


def switch(text: str, name: str, path: str | Path = "params.yaml") -> str:
    """``text`` (a params.yaml) with profile ``name``'s axes set; every other byte as it was.

    Each value is replaced where the parser says it is, in its old style (flow ``[a, b]``, block
    ``- a`` lines, quoting), so comments and the layout around it stay untouched. The result is
    parsed again and must equal the old document with only those keys changed; otherwise (a layout
    the splice does not expect) the file is rewritten by ruamel's round-trip dumper, which keeps
    comments and order but may re-wrap long lines."""
    old = _load(text)
    axes = axes_for(old, name)
    axes.update(plugin_axes({**_plain(old), **axes}, path))
    return _with_model_sections(_splice(text, old, axes), axes["plugin_runs"])


def sync(text: str, path: str | Path = "params.yaml") -> str:
    """``text`` with plugin_runs / score_runs (and an empty ``models.<plugin>`` section per plugin)
    matching its plugins, results and run_datasets: `msgnn-bench plugins sync`."""
    old = _load(text)
    axes = plugin_axes(_plain(old), path)
    return _with_model_sections(_splice(text, old, axes), axes["plugin_runs"])


def _splice(text: str, old, axes: dict) -> str:
    """``text`` with the top-level ``axes`` values replaced in place (see ``switch``)."""
    from ruamel.yaml import YAMLError

    try:
        spans = _spans(text)
    except YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from exc
    out = text
    for key, value in sorted(((k, v) for k, v in axes.items() if k in spans),
                             key=lambda kv: -spans[kv[0]][0]):  # from the end: offsets stay valid
        start, end, kind, column, style = spans[key]
        out = out[:start] + _render(value, kind, column, style) + out[end:]
    for key in [k for k in axes if k not in spans]:  # a params.yaml from before this axis
        prev = [k for k in AXES[:AXES.index(key)] if k in axes and k in old]
        line = f"{key}: {_render(axes[key], 'flow', 0)}\n"
        if prev:
            nl = out.index("\n", _spans(out)[prev[-1]][1])
            out = out[:nl + 1] + line + out[nl + 1:]
        else:
            out = out.rstrip("\n") + "\n" + line
    expected = {**_plain(old), **axes}
    try:
        got = _plain(_yaml().load(out))
    except YAMLError:
        got = None
    if got != expected or [k for k in got if k in old] != [str(k) for k in old]:  # same data, same order
        out = _dump_round_trip(old, axes)
    return out


def _with_model_sections(text: str, runs: dict) -> str:
    """``text`` with an empty ``models.<plugin>`` section for every plugin of ``runs`` lacking one (every
    model needs one: it is the key `dvc exp run -S models.<m>.…` sets); unchanged when none is missing."""
    doc = _yaml().load(text)
    models = doc.get("models")
    missing = sorted({e["model"] for e in runs.values()} - set(models or {}))
    if not missing or not hasattr(models, "insert"):
        return text  # nothing to add (or no models mapping: validation names the problem)
    import io

    for m in missing:
        models[m] = {}
    y = _yaml()
    y.width = 1 << 16
    y.indent(mapping=2, sequence=2, offset=0)
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def _plain(node):
    """ruamel's round-trip containers as plain dicts/lists (for comparing documents)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node if isinstance(node, (bool, type(None))) else (str(node) if isinstance(node, str) else node)


def _dump_round_trip(doc, axes: dict) -> str:
    import io

    from ruamel.yaml.comments import CommentedSeq

    for key, value in axes.items():
        if isinstance(value, list) and isinstance(doc.get(key), CommentedSeq):
            seq = doc[key]
            # ruamel hangs what follows the last item (comment, blank line) on that item's index
            tail = seq.ca.items.get(len(seq) - 1) if len(seq) else None
            seq.ca.items.clear()
            seq[:] = value
            if tail is not None and value:
                seq.ca.items[len(value) - 1] = tail
        elif key in doc:
            doc[key] = value  # a key's end-of-line comment belongs to the mapping: it stays
        else:
            prev = [k for k in AXES[:AXES.index(key)] if k in doc]
            doc.insert(list(doc).index(prev[-1]) + 1 if prev else len(doc), key, value)
    y = _yaml()
    y.width = 1 << 16  # never re-wrap a long entry in the middle of a value
    y.indent(mapping=2, sequence=2, offset=0)  # DVC's layout: `- ` at the key's column
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def switch_file(path: str | Path, name: str | None) -> dict:
    """Rewrite ``path`` to profile ``name`` (None: only `plugins sync`); the new file is validated
    before it replaces the old one, so a failure leaves params.yaml as it was. Returns the validated
    settings."""
    from benchmark.core import config, io as bio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run from the repository root or pass --params")
    try:
        original = path.read_text()
        config.parse_yaml(original, path)  # strict, as every stage reads it: no aliases, no duplicate keys
        text = switch(original, name, path) if name is not None else sync(original, path)
    except config.ConfigError as exc:
        raise ValueError(str(exc)) from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    fd, tmp = tempfile.mkstemp(prefix=".params-", suffix=".yaml", dir=path.parent)
    # named as params.yaml is (relative stays relative): plugin paths are resolved against its folder
    check = os.path.join(os.path.dirname(str(path)), os.path.basename(tmp))
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        raw = config.load_params(check)  # the same checks every stage runs
    except config.ConfigError as exc:
        raise ValueError(str(exc).replace(check, str(path))) from None
    finally:
        os.unlink(tmp)
    bio.write_text(path, text)
    return raw
