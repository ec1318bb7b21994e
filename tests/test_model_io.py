"""Loading and saving: external data, atomic writes, unreadable inputs."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from helpers import parse, run

from tensorsmith import model_io
from tensorsmith.errors import UsageError

BIG = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 256] x) => (float[N, 256] y) {
    y = MatMul (x, w)
}"""


@pytest.fixture
def model_file(tmp_path):
    proto = parse(BIG, {"w": np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)})
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    return path


def test_roundtrip_embedded(model_file, tmp_path):
    m = model_io.load(model_file)
    files = model_io.save(m, tmp_path / "out.onnx")
    assert files == [tmp_path / "out.onnx"]
    assert not (tmp_path / "out.onnx.data").exists()
    x = {"x": np.ones((2, 256), np.float32)}
    np.testing.assert_array_equal(run(onnx.load(model_file), x)[0], run(onnx.load(files[0]), x)[0])


def test_external_data_when_asked_and_reload(model_file, tmp_path):
    m = model_io.load(model_file)
    out = tmp_path / "ext.onnx"
    files = model_io.save(m, out, external_data=True)
    assert files == [out, tmp_path / "ext.onnx.data"]
    assert out.stat().st_size < 10_000 and (tmp_path / "ext.onnx.data").stat().st_size == 256 * 256 * 4
    # loads lazily and saves again somewhere else, data still correct
    again = model_io.load(out)
    files2 = model_io.save(again, tmp_path / "again.onnx")
    x = {"x": np.ones((1, 256), np.float32)}
    np.testing.assert_array_equal(run(onnx.load(model_file), x)[0], run(onnx.load(files2[0]), x)[0])


def test_external_data_chosen_by_size(model_file, tmp_path, monkeypatch):
    monkeypatch.setattr(model_io, "EXTERNAL_DATA_THRESHOLD", 1000)
    files = model_io.save(model_io.load(model_file), tmp_path / "auto.onnx")
    assert (tmp_path / "auto.onnx.data") in files


def test_overwrite_in_place_with_external_data(model_file, tmp_path):
    out = tmp_path / "inplace.onnx"
    model_io.save(model_io.load(model_file), out, external_data=True)
    model_io.save(model_io.load(out), out, external_data=True)  # reads the file it replaces
    x = {"x": np.ones((1, 256), np.float32)}
    np.testing.assert_array_equal(run(onnx.load(model_file), x)[0], run(onnx.load(out), x)[0])


def test_stale_data_file_removed_and_no_temp_left(model_file, tmp_path):
    out = tmp_path / "o.onnx"
    model_io.save(model_io.load(model_file), out, external_data=True)
    model_io.save(model_io.load(model_file), out, external_data=False)
    assert not (tmp_path / "o.onnx.data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "o.onnx"]


def test_failed_write_leaves_nothing(model_file, tmp_path, monkeypatch):
    import onnx_ir as ir

    def boom(*a, **k):
        # write part of a file, then fail, as a full disk would
        open(a[1], "wb").write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(ir, "save", boom)
    with pytest.raises(Exception, match="No space left"):
        model_io.save(model_io.load(model_file), tmp_path / "x.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(os.urandom(4096)), "not"),
        (lambda p: p.mkdir(), "directory"),
        (lambda p: p.write_text("hello, I am text"), "not"),
    ],
)
def test_unreadable_inputs(tmp_path, make, words):
    p = tmp_path / "bad.onnx"
    make(p)
    with pytest.raises(UsageError, match=words):
        model_io.load(p)


def test_truncated_model(model_file, tmp_path):
    data = model_file.read_bytes()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError):
        model_io.load(p)


def test_missing_or_truncated_external_data(model_file, tmp_path):
    out = tmp_path / "e.onnx"
    model_io.save(model_io.load(model_file), out, external_data=True)
    data = tmp_path / "e.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(UsageError, match="truncated"):
        model_io.load(out)
    data.unlink()
    with pytest.raises(UsageError, match="missing"):
        model_io.load(out)


def test_output_folder_created(model_file, tmp_path):
    # issue 12: -o into a folder that does not exist creates it (was: refused)
    files = model_io.save(model_io.load(model_file), tmp_path / "new" / "deeper" / "o.onnx")
    assert files == [tmp_path / "new" / "deeper" / "o.onnx"] and files[0].is_file()
    assert sorted(p.name for p in (tmp_path / "new" / "deeper").iterdir()) == ["o.onnx"]


def test_output_folder_under_a_file_refused(model_file, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        model_io.save(model_io.load(model_file), tmp_path / "afile" / "sub" / "o.onnx")


def test_discarded_stage_removes_created_folders(model_file, tmp_path):
    staged = model_io.stage(model_io.load(model_file), tmp_path / "a" / "b" / "o.onnx")
    assert staged.model_path.is_file() and (tmp_path / "a" / "b").is_dir()
    staged.discard()
    assert list(tmp_path.iterdir()) == [model_file]


def test_atomic_write_bytes_and_install(tmp_path):
    from tensorsmith import atomic

    target = tmp_path / "x" / "y.bin"
    atomic.write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc" and (target.stat().st_mode & 0o777) == 0o666 & ~_umask()
    atomic.write_text(target, "de")
    assert target.read_text() == "de" and sorted(p.name for p in target.parent.iterdir()) == ["y.bin"]
    # a folder replaces a folder; an error inside Staging leaves nothing behind
    out = tmp_path / "saved"
    for content in ("one", "two"):
        with atomic.Staging(out) as st:
            st.path().mkdir()
            (st.path() / "f").write_text(content)
            st.install(st.path(), out)
        assert (out / "f").read_text() == content
    with pytest.raises(RuntimeError), atomic.Staging(tmp_path / "p" / "q" / "r.plan") as st:
        st.path().write_bytes(b"1")
        raise RuntimeError("verification failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved", "x"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_external_source_stays_external_by_default(model_file, tmp_path):
    ext = tmp_path / "ext.onnx"
    model_io.save(model_io.load(model_file), ext, external_data=True)
    files = model_io.save(model_io.load(ext), tmp_path / "again.onnx")
    assert tmp_path / "again.onnx.data" in files
    # an embedded source stays embedded
    files = model_io.save(model_io.load(model_file), tmp_path / "emb.onnx")
    assert files == [tmp_path / "emb.onnx"]
