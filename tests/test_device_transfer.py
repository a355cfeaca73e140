"""tools/device_transfer.py: a general student carried without its (frozen) word embeddings, in float16."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

TOOL = Path(__file__).resolve().parents[1] / "tools" / "device_transfer.py"


@pytest.fixture(scope="module")
def transfer():
    spec = importlib.util.spec_from_file_location("device_transfer", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _general_student(experiment: Path, teacher: Path, *, touch_embeddings: bool) -> Path:
    student = experiment / "students" / "general-0123abcd"
    student.mkdir(parents=True)
    weights = load_file(teacher / "model.safetensors")
    weights = {k: v for k, v in weights.items() if "embeddings." in k or "encoder.layer.0." in k}
    for name in weights:
        if not name.endswith("word_embeddings.weight") or touch_embeddings:
            weights[name] = weights[name] + 0.01 * torch.randn_like(weights[name])  # "trained"
    save_file(weights, student / "model.safetensors")
    shutil.copy2(teacher / "config.json", student / "config.json")
    (student / "distill.json").write_text(json.dumps({"teacher": {"name": str(teacher)}, "wall_seconds": 1.0}))
    return student


def test_pack_and_unpack_round_trip(tmp_path, tiny_teacher_dir, transfer):
    student = _general_student(tmp_path / "gpu", tiny_teacher_dir, touch_embeddings=False)
    packed, students = tmp_path / "packed", tmp_path / "cpu" / "students"
    packed.mkdir()
    transfer.pack(tmp_path / "gpu", packed)
    assert not any("word_embeddings" in k for f in packed.glob("*.safetensors") for k in load_file(f))
    transfer.unpack(packed, tiny_teacher_dir, students)
    original = load_file(student / "model.safetensors")
    restored = load_file(students / student.name / "model.safetensors")
    assert original.keys() == restored.keys()
    table = next(k for k in original if k.endswith("word_embeddings.weight"))
    assert torch.equal(original[table], restored[table])
    for name, tensor in original.items():
        assert restored[name].dtype == torch.float32
        torch.testing.assert_close(restored[name], tensor, rtol=2**-11, atol=2**-24)
    record = json.loads((students / student.name / "distill.json").read_text())
    assert record["teacher"]["name"] == str(tiny_teacher_dir) and "float16" in record["made_on"]["carried"]
    assert (students / student.name / "tokenizer.json").is_file()
    assert not list(students.glob(".*"))  # nothing half-written left beside it


def test_pack_refuses_trained_embeddings(tmp_path, tiny_teacher_dir, transfer):
    _general_student(tmp_path / "gpu", tiny_teacher_dir, touch_embeddings=True)
    (tmp_path / "packed").mkdir()
    with pytest.raises(SystemExit, match="word embeddings differ from the teacher's"):
        transfer.pack(tmp_path / "gpu", tmp_path / "packed")
