"""A study: the rows of one table, each a method preset (or yaml) with overrides, the predictor it tables and the
paper's number where the paper has one. ``mkdseg compare --study NAME|FILE`` trains every distinct
(method, overrides) once per draw and tables its rows; without ``--study`` every ``--methods`` entry is a row.

A study yaml::

    title: "Table 2: ablation of MKD's components"
    reference: "MKD: ensemble"          # the row every other is paired against (default: the first)
    paper_column: Paper (MM-WHS CT)     # header of the paper's numbers
    rows:
      - {label: "MKD: ensemble", method: mkd, predictor: ens, paper: 90.12}
      - {label: "w/o syn->real KD: ensemble", method: mkd, predictor: ens, set: {model.init_args.lambda_kd_real: 0.0}}

The shipped studies (``src/mkdseg/compare/studies/``) are the paper's tables and the later options beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

STUDIES = Path(__file__).parent / "studies"
ROW_KEYS = {"label", "method", "predictor", "paper", "set"}
STUDY_KEYS = {"title", "reference", "paper_column", "rows"}


@dataclass(frozen=True)
class StudyRow:
    """One table row: ``predictor`` (``None``: the method's primary one) of ``method`` trained with ``overrides``."""

    label: str
    method: str
    predictor: str | None = None
    paper: float | None = None
    overrides: tuple[str, ...] = ()  # ``--key=value`` for LightningCLI

    @property
    def group(self) -> tuple[str, tuple[str, ...]]:
        """Rows of one group share their runs (MKD's S_syn, S_real and ensemble are one run's three predictors)."""
        return self.method, self.overrides


@dataclass(frozen=True)
class Study:
    title: str
    rows: tuple[StudyRow, ...]
    reference: str | None = None
    paper_column: str = "Paper"

    @property
    def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        return list(dict.fromkeys(row.group for row in self.rows))


def study_names() -> list[str]:
    return sorted(p.stem for p in STUDIES.glob("*.yaml"))


def method_rows(methods: list[str]) -> Study:
    """``--methods`` as a study: one row per method, labelled with its name, tabling its primary predictor."""
    return Study("", tuple(StudyRow(Path(m).stem if m.endswith((".yaml", ".yml")) else m, m) for m in methods))


def load_study(name: str) -> Study:
    """A shipped study's name (``table1``, ...) or a study yaml; errors name the file and the entry."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = STUDIES / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"--study: unknown study {name!r}; shipped: {', '.join(study_names())}, or a .yaml file")
    elif not path.is_file():
        raise FileNotFoundError(f"--study: no such study file {path}")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(spec, dict) or not isinstance(spec.get("rows"), list) or not spec["rows"]:
        raise ValueError(f"{path}: a study is a mapping with a non-empty list `rows`")
    unknown = set(spec) - STUDY_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; a study has {sorted(STUDY_KEYS)}")
    rows = tuple(_row(path, i, entry) for i, entry in enumerate(spec["rows"]))
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: row labels must differ; repeated: {sorted({l for l in labels if labels.count(l) > 1})}")
    reference = spec.get("reference")
    if reference is not None and reference not in labels:
        raise ValueError(f"{path}: reference {reference!r} is none of the rows' labels")
    return Study(str(spec.get("title", path.stem)), rows, reference, str(spec.get("paper_column", "Paper")))


def _row(path: Path, index: int, entry) -> StudyRow:
    where = f"{path}: rows[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: a row is a mapping with label and method")
    unknown = set(entry) - ROW_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; a row has {sorted(ROW_KEYS)}")
    for key in ("label", "method"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ValueError(f"{where}: `{key}` must be a non-empty string")
    overrides = entry.get("set") or {}
    if not isinstance(overrides, dict):
        raise ValueError(f"{where}: `set` maps dotted LightningCLI options to values, e.g. {{data.n_assistant: 5}}")
    paper = entry.get("paper")
    if paper is not None and not isinstance(paper, (int, float)):
        raise ValueError(f"{where}: `paper` must be a number, got {paper!r}")
    return StudyRow(entry["label"], entry["method"], entry.get("predictor"), None if paper is None else float(paper),
                    tuple(sorted(f"--{k}={cli_value(v)}" for k, v in overrides.items())))


def cli_value(value) -> str:
    """A yaml value as LightningCLI reads it back from ``--key=value``."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()
