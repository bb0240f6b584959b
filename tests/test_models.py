"""A model config that lacks the field its source reads (``path``, ``hub_id``, ``package``) is one ValueError
naming the field, before any weights load (harness.models.ModelSpec.need; docs/errors.md, "Model")."""

from __future__ import annotations

import pytest

from harness.models import ModelSpec, check_model


@pytest.mark.parametrize(
    "fields, missing",
    [
        ({"source": "path"}, "path"),
        ({"source": "hub"}, "hub_id"),
        ({"source": "gguf_package", "gguf_file": "m.gguf"}, "package"),
    ],
    ids=["path", "hub", "gguf_package"],
)
def test_config_without_the_field_its_source_reads_is_one_line(fields, missing):
    spec = ModelSpec(name="broken", **fields)
    with pytest.raises(ValueError) as err:
        check_model(spec)
    source = fields["source"]
    assert str(err.value) == f"model 'broken' (source {source}) needs `{missing}` in its config"


def test_ref_is_the_directory_or_the_hub_id():
    assert ModelSpec(name="m", source="path", path="/models/m").ref() == "/models/m"
    assert ModelSpec(name="o/m", source="hub", hub_id="o/m").ref() == "o/m"
