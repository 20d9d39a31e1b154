import json

import numpy as np
import pytest

from workbench.core.schema import DEFAULT_SCHEMA, ClassSchema, load_schema


def test_default_schema_when_no_classes_json(tmp_path):
    s = load_schema(tmp_path)
    assert s == DEFAULT_SCHEMA
    assert s.values == (0, 32, 64, 96, 128, 160)
    assert (s.flip_permutation == np.arange(6)).all()  # a mirrored car keeps its front door at its front


def test_dsmlr_schema_and_flip_permutation(dsmlr):
    s = load_schema(dsmlr)
    assert s.num_classes == 19 and s.values == tuple(range(19))
    perm = s.flip_permutation
    name = dict(enumerate(s.names))
    assert name[perm[s.names.index("front_left_door")]] == "front_right_door"
    assert name[perm[s.names.index("left_mirror")]] == "right_mirror"
    assert name[perm[s.names.index("front_bumper")]] == "front_bumper"  # front/back unaffected
    assert (perm[perm] == np.arange(19)).all()  # involution


def test_value_lut_marks_unknown_values():
    lut = DEFAULT_SCHEMA.value_to_index
    assert lut[0] == 0 and lut[160] == 5 and lut[33] == 255


def test_orientation_pairs_cover_front_rear_and_left_right(dsmlr):
    s = load_schema(dsmlr)
    pairs = {(s.names[a], s.names[b]) for a, b in s.orientation_pairs()}
    assert ("back_left_door", "back_right_door") in pairs
    assert ("back_bumper", "front_bumper") in pairs
    assert ("front_door", "rear_door") in {(DEFAULT_SCHEMA.names[a], DEFAULT_SCHEMA.names[b])
                                           for a, b in DEFAULT_SCHEMA.orientation_pairs()}


@pytest.mark.parametrize("body, message", [
    ({"classes": [{"name": "a", "value": 0}, {"name": "a", "value": 1}]}, "duplicate class names"),
    ({"classes": [{"name": "a", "value": 0}, {"name": "b", "value": 0}]}, "duplicate class values"),
    ({"classes": [{"name": "a", "value": 300}]}, "8-bit"),
    ({"classes": [{"name": "a", "value": 0}], "hflip_pairs": [["a", "zz"]]}, "unknown class"),
    ({"nothing": 1}, "malformed"),
])
def test_bad_schema_files_name_the_file(tmp_path, body, message):
    (tmp_path / "classes.json").write_text(json.dumps(body))
    with pytest.raises(ValueError, match=message) as err:
        load_schema(tmp_path)
    assert "classes.json" in str(err.value)


def test_roundtrip_dict():
    s = ClassSchema(("bg", "l", "r"), (0, 5, 9), (("l", "r"),))
    assert ClassSchema.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert list(s.flip_permutation) == [0, 2, 1]
