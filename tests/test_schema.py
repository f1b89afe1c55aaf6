"""The clinical vocabulary: 36 values, multi-hot compounds, presence mask, helpful errors."""

import re

import numpy as np
import pytest

from mammofuse.clinical import ClinicalValueError, load_schema

schema = load_schema()


def test_vocabulary_has_the_36_cbis_ddsm_values_in_five_fields():
    assert schema.id == "cbis-ddsm-v1"
    assert schema.field_names == ("density", "shape", "margin", "calc_type", "calc_distribution")
    assert schema.field_sizes == (4, 8, 5, 14, 5)
    assert schema.dim == 36


def test_compound_value_is_multi_hot_and_absent_fields_are_zero_blocks():
    vector, mask = schema.encode({"calc_type": "PUNCTATE-PLEOMORPHIC"})
    block = vector[schema.slices()["calc_type"]]
    values = schema.field("calc_type").values
    assert block[values.index("PUNCTATE")] == 1 and block[values.index("PLEOMORPHIC")] == 1
    assert block.sum() == 2 and vector.sum() == 2
    assert mask.tolist() == [False, False, False, True, False]


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("density", "C", ("3",)),
        ("density", 3, ("3",)),
        ("density", "3.0", ("3",)),
        ("margin", "ill-defined", ("ILL_DEFINED",)),
        ("margin", " Ill Defined ", ("ILL_DEFINED",)),
        ("margin", "indistinct", ("ILL_DEFINED",)),
        ("shape", "irregular-architectural_distortion", ("IRREGULAR", "ARCHITECTURAL_DISTORTION")),
        ("calc_distribution", "REGIONAL-REGIONAL", ("REGIONAL",)),
        ("calc_type", "NA", ()),
        ("calc_type", "", ()),
        ("calc_type", None, ()),
    ],
)
def test_normalisation(field, raw, expected):
    assert schema.normalise_value(field, raw) == expected


def test_unknown_value_lists_valid_values_and_the_closest_match():
    with pytest.raises(ClinicalValueError) as info:
        schema.encode({"margin": "spicullated"})
    message = str(info.value)
    assert "spiculated" in message and "circumscribed" in message and "did you mean spiculated" in message


def test_unknown_field_is_an_error():
    with pytest.raises(ClinicalValueError, match="unknown clinical field"):
        schema.encode({"assessment": "4"})


def test_decode_inverts_encode():
    values = {"density": "2", "shape": "OVAL-LYMPH_NODE", "margin": "CIRCUMSCRIBED"}
    vector, mask = schema.encode(values)
    assert schema.decode(vector, mask) == {**values, "calc_type": None, "calc_distribution": None}


def test_every_value_in_the_real_training_csvs_is_in_the_vocabulary(cbis_csv):
    from mammofuse.data import load_dataset

    samples = load_dataset("cbis-ddsm", cbis_csv)
    encoded = np.stack([schema.encode(s.clinical)[0] for s in samples])
    assert encoded.shape == (2874, 36)
    assert (encoded.sum(axis=0) > 0).sum() >= 34  # nearly every value occurs in the real data


def test_assessment_and_subtlety_never_reach_the_clinical_inputs(cbis_csv):
    from mammofuse.data import load_dataset

    for sample in load_dataset("cbis-ddsm", cbis_csv):
        assert set(sample.clinical) <= set(schema.field_names)


@pytest.mark.parametrize(("field", "raw", "message"), [
    ("density", "-2", r"^unknown breast density '-2' \(valid: 1, 2, 3, 4\)"),  # was density 2
    ("density", -2, r"^unknown breast density '-2'"),
    ("density", -2.0, r"^unknown breast density '-2.0'"),
    ("density", "1-4", r"^breast density takes one value, not '1-4' \(valid: 1, 2, 3, 4\)$"),  # was densities 1 and 4
    ("density", "2-2", "breast density takes one value"),
    ("calc_type", "PLEOMORPHIC-", "calcification type 'PLEOMORPHIC-' has an empty term"),
    ("shape", "oval--round", "mass shape 'oval--round' has an empty term"),
])
def test_negative_numbers_empty_terms_and_compound_densities_are_refused(field, raw, message):
    with pytest.raises(ClinicalValueError, match=message):
        schema.normalise_value(field, raw)


def test_only_density_is_single_valued_and_compounds_elsewhere_still_work():
    assert [f.name for f in schema.fields if not f.compound] == ["density"]
    assert schema.normalise_value("shape", "LOBULATED-IRREGULAR") == ("LOBULATED", "IRREGULAR")
    assert schema.normalise_value("density", "extremely-dense") == ("4",)  # one term, hyphenated
    assert schema.normalise_value("calc_type", "PUNCTATE - PLEOMORPHIC") == ("PUNCTATE", "PLEOMORPHIC")


def test_predict_refuses_a_negative_or_compound_density_in_python_and_the_cli(real_dicoms):
    from typer.testing import CliRunner

    import mammofuse
    from mammofuse.cli import app

    with pytest.raises(mammofuse.MammofuseError, match="unknown breast density '-2'"):
        mammofuse.predict(real_dicoms["P_00173_lcc"], density=-2, roi=(2400, 1145, 100))
    result = CliRunner().invoke(app, ["predict", str(real_dicoms["P_00173_lcc"]), "--density", "1-4"])
    assert result.exit_code == 2 and "breast density takes one value, not '1-4'" in result.stderr


@pytest.mark.parametrize(("field", "raw", "expected"), [
    ("shape", "focal asymmetry", ("FOCAL_ASYMMETRIC_DENSITY",)),
    ("shape", "Global-Asymmetry", ("ASYMMETRIC_BREAST_TISSUE",)),
    ("calc_type", "large rod-like", ("LARGE_RODLIKE",)),  # was "unknown calcification type 'large rod'"
    ("calc_type", "large rod like", ("LARGE_RODLIKE",)),
    ("calc_type", "LARGE_RODLIKE-ROUND_AND_REGULAR", ("LARGE_RODLIKE", "ROUND_AND_REGULAR")),  # as CBIS-DDSM spells it
])
def test_bi_rads_names_of_cbis_ddsm_values_are_accepted(field, raw, expected):
    assert schema.normalise_value(field, raw) == expected


@pytest.mark.parametrize(("raw", "shown"), [("asymmetry", "asymmetry"), ("Asymmetry", "Asymmetry"), ("irregular-asymmetry", "asymmetry")])
def test_a_bare_asymmetry_is_refused_with_the_asymmetries_the_vocabulary_codes(raw, shown):
    """BI-RADS 'asymmetry' (one view) is a finding of its own: it was read as focal asymmetric density, silently."""
    hint = "give focal_asymmetric_density (focal asymmetry) or asymmetric_breast_tissue (global asymmetry)"
    with pytest.raises(ClinicalValueError, match=f"^mass shape '{shown}' is ambiguous: this vocabulary has no value for it; {re.escape(hint)}$"):
        schema.normalise_value("shape", raw)


def test_an_unknown_term_of_a_compound_is_shown_in_the_value_typed():
    with pytest.raises(ClinicalValueError, match=r"^unknown calcification type 'large rod' in 'large rod-lik', whose - , ; / \| separate combined "
                                                  r"values \(valid: .*\); did you mean large_rodlike\?$"):
        schema.normalise_value("calc_type", "large rod-lik")


def test_the_two_lucent_centre_calcifications_of_cbis_ddsm_stay_two_codes():
    """Both spellings are CBIS-DDSM categories (93 and 18 training rows): merging them would change the encoding."""
    values = schema.field("calc_type").values
    assert "LUCENT_CENTER" in values and "LUCENT_CENTERED" in values
    assert schema.normalise_value("calc_type", "lucent centred") == ("LUCENT_CENTERED",)


@pytest.mark.parametrize("typed, expected", [("round\u2013oval", ("ROUND", "OVAL")), ("architectural\u2011distortion", ("ARCHITECTURAL_DISTORTION",)),
                                             ("ir\u00adregular", ("IRREGULAR",))])
def test_typographic_dashes_read_as_hyphens(typed, expected):
    """A word processor's en dash or non-breaking hyphen was an unknown term; a soft hyphen too."""
    assert load_schema("cbis-ddsm-v1").normalise({"shape": typed})["shape"] == expected
