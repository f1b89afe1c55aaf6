"""The clinical schema: normalise radiologist findings and encode them multi-hot.

The vocabulary lives in a versioned YAML file (``vocab/<name>-v<version>.yaml``); the
order of fields and values there *is* the encoding, so a model records the vocabulary
version it was trained with and refuses another.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

import numpy as np
import yaml

from mammofuse.errors import MammofuseError

DEFAULT_VOCABULARY = "cbis-ddsm-v1"
BREAST_FIELDS = frozenset({"density"})
"""Findings of the breast, not of its lesion: no aux_findings target, and no lesion finding (:meth:`ClinicalSchema.lesion_fields`)."""


class ClinicalValueError(MammofuseError, ValueError):
    """An unknown clinical value; the message lists the valid values and the closest one."""


@dataclass(frozen=True)
class ClinicalField:
    """One clinical field (e.g. mass margins) and its allowed values; ``compound``: a finding may combine several
    (``PUNCTATE-PLEOMORPHIC``), as the vocabulary's ``compound: false`` says breast density may not; ``ambiguous``:
    input refused with the values it could mean (BI-RADS ``asymmetry``, which CBIS-DDSM does not code)."""

    name: str
    label: str
    values: tuple[str, ...]
    csv_columns: tuple[str, ...] = ()
    synonyms: Mapping[str, str] = field(default_factory=dict)
    compound: bool = True
    ambiguous: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.values)


DASHES = str.maketrans({**dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2212", "-"), "\u00ad": None, "\u200b": None})
"""Typographic dashes (a word processor's en dash in "round–oval") read as hyphens; soft hyphens and zero-width spaces dropped."""


def _canonical(text: str) -> str:
    """Upper case, spaces and hyphens within one term folded to underscores."""
    return re.sub(r"[\s_]+", "_", text.strip().upper())


@dataclass(frozen=True)
class ClinicalSchema:
    """A versioned clinical vocabulary and its encoder.

    Example:
        >>> schema = load_schema()
        >>> vector, mask = schema.encode({"density": "C", "margin": "spiculated"})
        >>> vector.shape, mask.tolist()
        ((36,), [True, False, True, False, False])
    """

    name: str
    version: int
    fields: tuple[ClinicalField, ...]
    missing_tokens: frozenset[str]
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}-v{self.version}"

    @property
    def dim(self) -> int:
        return sum(f.size for f in self.fields)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def field_sizes(self) -> tuple[int, ...]:
        return tuple(f.size for f in self.fields)

    @property
    def lesion_fields(self) -> tuple[bool, ...]:
        """Per field, in order, whether it describes the lesion rather than the breast (:data:`BREAST_FIELDS`)."""
        return tuple(name not in BREAST_FIELDS for name in self.field_names)

    def slices(self) -> dict[str, slice]:
        """Each field's block in the encoded vector."""
        out, start = {}, 0
        for f in self.fields:
            out[f.name] = slice(start, start + f.size)
            start += f.size
        return out

    def field(self, name: str) -> ClinicalField:
        for f in self.fields:
            if f.name == name:
                return f
        raise ClinicalValueError(f"unknown clinical field {name!r}; fields: {', '.join(self.field_names)}")

    def normalise_value(self, field_name: str, raw: Any) -> tuple[str, ...]:
        """Turn one raw value into its canonical terms; () when absent.

        Compound CBIS-DDSM values (``PUNCTATE-PLEOMORPHIC``) give several terms, in fields that allow them. Hyphens
        split terms; spaces fold to underscores (``ill defined`` -> ``ILL_DEFINED``). An empty term (``-2``,
        ``PLEOMORPHIC-``) is an error, never dropped.
        """
        f = self.field(field_name)
        if raw is None or (isinstance(raw, float) and np.isnan(raw)):
            return ()
        text = str(raw).translate(DASHES).strip()
        if _canonical(text) in self.missing_tokens:
            return ()
        if isinstance(raw, (int, np.integer)) or re.fullmatch(r"\d+(\.0+)?", text):
            text = str(int(float(text)))
        whole = _canonical(text.replace("-", "_"))
        self._refuse_ambiguous(f, whole, text)
        whole = f.synonyms.get(whole, whole)
        if whole in f.values:  # "ill-defined" and "large rod-like" are one term, not two
            return (whole,)
        parts = re.split(r"[-,;/|]", text)
        whole_terms = all(part.strip() for part in parts)
        if len(parts) > 1 and not f.compound:  # "-2" is no density, "2, 3" two of them
            raise ClinicalValueError(f"{f.label} takes one value, not {text!r} (valid: {self._valid(f)})" if whole_terms
                                     else self._unknown_message(f, text))
        if not whole_terms:
            raise ClinicalValueError(f"{f.label} {text!r} has an empty term (before, between or after a separator - , ; / |; "
                                     f"valid: {self._valid(f)})")
        terms: list[str] = []
        for part in parts:
            term = _canonical(part)
            if term in self.missing_tokens:
                continue
            self._refuse_ambiguous(f, term, part.strip())
            term = f.synonyms.get(term, term)
            if term not in f.values:
                raise ClinicalValueError(self._unknown_message(f, part.strip(), text))
            if term not in terms:
                terms.append(term)
        return tuple(terms)

    @staticmethod
    def _refuse_ambiguous(f: ClinicalField, term: str, raw: str) -> None:
        """Raise ClinicalValueError, naming the values it could mean, for a term the vocabulary calls ambiguous."""
        if term not in f.ambiguous:
            return
        choices = [c.lower() + "".join(f" ({s.lower().replace('_', ' ')})" for s, v in f.synonyms.items() if v == c) for c in f.ambiguous[term]]
        raise ClinicalValueError(f"{f.label} {raw!r} is ambiguous: this vocabulary has no value for it; give {' or '.join(choices)}")

    @staticmethod
    def _unknown_message(f: ClinicalField, raw: str, typed: str | None = None) -> str:
        """The error for an unknown value ``raw``: the valid values and the closest one; ``typed``, the whole value it was a term of."""
        candidates = list(f.values) + list(f.synonyms)
        close = difflib.get_close_matches(_canonical(raw), candidates, n=1, cutoff=0.4)
        hint = f"; did you mean {f.synonyms.get(close[0], close[0]).lower()}?" if close else ""
        within = f" in {typed!r}, whose - , ; / | separate combined values" if typed is not None and typed != raw else ""
        return f"unknown {f.label} {raw!r}{within} (valid: {ClinicalSchema._valid(f)}){hint}"

    @staticmethod
    def _valid(f: ClinicalField) -> str:
        return ", ".join(v.lower() for v in f.values)

    def normalise(self, values: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        """Normalise a mapping of field name -> raw value; unknown field names are errors."""
        out: dict[str, tuple[str, ...]] = {}
        for name, raw in values.items():
            terms = self.normalise_value(name, raw)
            if terms:
                out[name] = terms
        return out

    def encode(self, values: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Multi-hot vector (``dim``,) float32 and presence mask (n_fields,) bool."""
        normalised = self.normalise(values)
        vector = np.zeros(self.dim, dtype=np.float32)
        mask = np.zeros(len(self.fields), dtype=bool)
        for i, (f, block) in enumerate(zip(self.fields, self.slices().values())):
            terms = normalised.get(f.name, ())
            for term in terms:
                vector[block.start + f.values.index(term)] = 1.0
            mask[i] = bool(terms)
        return vector, mask

    def decode(self, vector: np.ndarray, mask: np.ndarray) -> dict[str, str | None]:
        """Readable values of an encoded vector (compound terms joined with '-')."""
        out: dict[str, str | None] = {}
        for i, (f, block) in enumerate(zip(self.fields, self.slices().values())):
            hot = [f.values[j] for j in np.flatnonzero(vector[block] > 0.5)]
            out[f.name] = "-".join(hot) if mask[i] and hot else None
        return out

    def display(self, vector: np.ndarray, mask: np.ndarray) -> dict[str, str | None]:
        """:meth:`decode` as people read it (``predict``'s records, ``explain``'s tables): lower case."""
        return {name: value.lower() if value else None for name, value in self.decode(vector, mask).items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "vocabulary": self.id,
            "dim": self.dim,
            "fields": [
                {"name": f.name, "label": f.label, "values": list(f.values), "synonyms": dict(f.synonyms), "compound": f.compound}
                for f in self.fields
            ],
        }


def vocabularies() -> tuple[str, ...]:
    """The ids of the packaged vocabularies (the only values ``vocabulary`` may take)."""
    folder = resources.files("mammofuse.clinical") / "vocab"
    return tuple(sorted(r.name.removesuffix(".yaml") for r in folder.iterdir() if r.name.endswith(".yaml")))


@lru_cache(maxsize=None)
def load_schema(vocabulary: str = DEFAULT_VOCABULARY) -> ClinicalSchema:
    """Load a packaged vocabulary by its registered id (``cbis-ddsm-v1``), never by a path."""
    known = vocabularies()
    if vocabulary not in known:
        raise MammofuseError(f"unknown clinical vocabulary {str(vocabulary)[:80]!r}; registered: {', '.join(known)}")
    resource = resources.files("mammofuse.clinical") / "vocab" / f"{vocabulary}.yaml"
    spec = yaml.safe_load(resource.read_text(encoding="utf-8"))
    fields = tuple(
        ClinicalField(
            name=f["name"],
            label=f["label"],
            values=tuple(str(v) for v in f["values"]),
            csv_columns=tuple(f.get("csv_columns", ())),
            synonyms={_canonical(str(k)): str(v) for k, v in (f.get("synonyms") or {}).items()},
            compound=bool(f.get("compound", True)),
            ambiguous={_canonical(str(k)): tuple(str(c) for c in v) for k, v in (f.get("ambiguous") or {}).items()},
        )
        for f in spec["fields"]
    )
    known = {"name", "version", "fields", "missing_tokens"}
    return ClinicalSchema(
        name=spec["name"],
        version=int(spec["version"]),
        fields=fields,
        missing_tokens=frozenset(_canonical(t) for t in spec.get("missing_tokens", [])),
        extra={k: v for k, v in spec.items() if k not in known},
    )
