"""One command-line vocabulary for every trainer and entry point.

A run configuration is a dataclass; each field becomes one ``--field-name`` option whose help text
is the comment written beside the field (``lr: float = 2e-4  # Adam learning rate``), followed by its
default. The options every trainer shares have one name each:

    --data DIR          the data folder (hw2_data, the folder that holds face/ and digits/)
    --run-dir DIR       the run folder: config.json, metrics.jsonl, last.pt, samples
    --max-steps N       total optimiser steps of the run
    --batch-size N      images per step (per process)
    --seed N            seed of weights, batch order and noise
    --threads N         CPU threads for torch (0: torch's default)
    --device NAME       auto | cpu | cuda | cuda:N
    --save-every-min M  minutes between atomic last.pt saves
    --no-progress       no progress bar (logs of background runs stay readable)
    --dry-run           a smoke run of a few steps in a throw-away folder

Spellings used by earlier releases (``--run``, ``--data-root``, ``--quiet``, ``--steps``, ...)
still work for one release and print a one-line deprecation note.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

C = TypeVar("C")

_FIELD_COMMENT = re.compile(r"^\s{4}(\w+)\s*:[^=#]*=[^#]*#\s?(.*)$")
_CONTINUATION = re.compile(r"^\s+#\s?(.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """Help text of each dataclass field: the comment on its line (and comment-only lines right
    below it), collected over the class and its bases (a subclass's comment wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        name = None
        for line in lines:
            m = _FIELD_COMMENT.match(line)
            if m:
                name, docs[m.group(1)] = m.group(1), m.group(2).strip()
                continue
            c = _CONTINUATION.match(line)
            if c and name is not None and not line.lstrip().startswith("# ---"):
                docs[name] += " " + c.group(1).strip()
            else:
                name = None
    return docs


def parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


class _Deprecated(argparse.Action):
    """An old spelling of an option: stores into the new option's dest and says so on stderr."""

    def __init__(self, option_strings, dest, new: str = "", nargs=None, **kw):
        self.new = new
        super().__init__(option_strings, dest, nargs=nargs, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is deprecated and will be removed in the next release; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def add_deprecated(parser: argparse.ArgumentParser, old: str, new: str, dest: str, flag: bool = False,
                   **kw: Any) -> None:
    """Accept ``old`` as an alias of ``new`` (hidden from --help, a note when used)."""
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, nargs=0 if flag else kw.pop("nargs", None),
                        help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kw)


def add_config_args(parser: argparse.ArgumentParser, cls: type, flags: dict[str, str] | None = None,
                    deprecated: dict[str, str] | None = None, skip: Iterable[str] = ()) -> None:
    """One option per field of the dataclass ``cls`` (bool fields take true/false), help from the
    field comments. ``flags`` renames a field's option (``{"data_root": "--data"}``); the automatic
    spelling then stays as a deprecated alias. ``deprecated`` adds more old spellings
    (``{"--steps": "max_steps"}``). Fields in ``skip`` get no option."""
    flags, deprecated = dict(flags or {}), dict(deprecated or {})
    docs = field_docs(cls)
    group = parser.add_argument_group(f"{cls.__name__} settings (saved in the run's config.json)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore
        auto = "--" + f.name.replace("_", "-")
        flag = flags.get(f.name, auto)
        doc = docs.get(f.name, "")
        shown = "''" if default == "" else (" ".join(map(str, default)) if isinstance(default, (tuple, list)) else default)
        help_text = f"{doc} (default: {shown})" if doc else f"(default: {shown})"
        kind = type(default)
        kw: dict[str, Any]
        if kind is bool:
            kw = dict(type=parse_bool, metavar="true|false")
        elif isinstance(default, (tuple, list)):
            kw = dict(type=type(default[0]) if default else str, nargs="+")
        else:
            kw = dict(type=kind if default is not None else str)
        group.add_argument(flag, dest=f.name, default=None, help=help_text.replace("%", "%%"), **kw)
        if flag != auto:
            add_deprecated(parser, auto, flag, f.name, **{k: v for k, v in kw.items() if k != "metavar"})
    for old, field in deprecated.items():
        f = next(x for x in dataclasses.fields(cls) if x.name == field)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore
        add_deprecated(parser, old, flags.get(field, "--" + field.replace("_", "-")), field,
                       type=parse_bool if type(default) is bool else type(default))


def config_from_args(cls: type[C], args: argparse.Namespace, base: C | None = None) -> C:
    """Build ``cls`` from ``base`` (or defaults), overriding fields given on the command line."""
    cfg = base if base is not None else cls()
    changes = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            default = getattr(cfg, f.name)
            changes[f.name] = tuple(v) if isinstance(default, tuple) else v
    return dataclasses.replace(cfg, **changes)


def _amp_to_precision(amp: Any) -> str:
    """The GAN loop's ``amp`` (auto|bf16|fp16|off, CUDA only) and the diffusion trainer's ``amp`` (bool)."""
    return "fp32" if amp in (False, "off") else ("auto" if amp is True else str(amp))


# old field name -> (new field name, value converter): configs saved by earlier releases still load
RENAMED_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "amp": ("precision", _amp_to_precision),
    "ckpt_minutes": ("save_every_min", float),
    "ckpt_every": ("save_every", int),
    "save_every_s": ("save_every_min", lambda s: float(s) / 60),
    "steps": ("max_steps", int),
    "init": ("init_from", str),
}


def config_from_dict(cls: type[C], d: dict) -> C:
    """Rebuild a config saved with ``dataclasses.asdict``: unknown keys are ignored, lists become
    tuples, fields renamed since (``RENAMED_FIELDS``) are carried over."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {}
    for k, v in d.items():
        if k not in names and k in RENAMED_FIELDS and RENAMED_FIELDS[k][0] in names and RENAMED_FIELDS[k][0] not in d:
            k, v = RENAMED_FIELDS[k][0], RENAMED_FIELDS[k][1](v)
        if k in names:
            kw[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kw)


def add_run_args(parser: argparse.ArgumentParser, *, data_default: str | None, data_help: str,
                 run_default: str, data_dest: str = "data") -> None:
    """The options every trainer has besides its config: --data, --run-dir, --dry-run, --no-progress
    (and their old spellings). ``data_default`` None: the data folder is a config field instead."""
    g = parser.add_argument_group("run")
    if data_default is not None:
        g.add_argument("--data", dest=data_dest, default=data_default, help=f"{data_help} (default: {data_default})")
        add_deprecated(parser, "--data-root", "--data", data_dest)
    g.add_argument("--run-dir", default=None,
                   help=f"run folder: config.json, metrics.jsonl, last.pt, samples; rerunning the same command "
                        f"resumes from it (default: {run_default})")
    add_deprecated(parser, "--run", "--run-dir", "run_dir")
    g.add_argument("--dry-run", action="store_true",
                   help="smoke run: a few steps on a few images in a new throw-away folder (or an empty --run-dir); "
                        "never touches an existing run")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar (background runs: the log stays readable)")
    add_deprecated(parser, "--quiet", "--no-progress", "no_progress", flag=True)


def dry_run_dir(run_dir: str | None, name: str) -> Path:
    """Where a dry run writes: a fresh temporary folder, or ``run_dir`` when it holds no run yet."""
    from common.errors import UserError
    if run_dir is None:
        Path("runs").mkdir(exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"dryrun_{name}_", dir="runs"))
    p = Path(run_dir)
    if p.exists() and any(p.iterdir()):
        raise UserError(f"--dry-run writes into a new or empty folder; {p} is not empty (leave --run-dir out)")
    return p


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """--device and --threads, as every entry point spells them."""
    parser.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: 0 = torch's default)")


def apply_threads(threads: int) -> None:
    """``torch.set_num_threads`` when ``threads`` > 0 (0 keeps torch's default)."""
    if threads > 0:
        import torch
        torch.set_num_threads(threads)


def command_parser(prog: str, doc: str, *example_lines: str) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is the first paragraph of ``doc`` and whose epilog lists
    the example commands."""
    return argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0], epilog=examples(*example_lines),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def examples(*lines: str) -> str:
    """An argparse epilog listing example commands."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)
