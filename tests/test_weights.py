"""``msgnn-bench weights`` and the checkpoint registry: validation on load, list statuses, download
through the resumable transfer code from a local HTTP server serving copies of the official files in
``../shared/official_weights`` (resume after a dropped connection, sha256 + git blob id checked, a
wrong file never kept), offline in one line, manual sources, and every PReNet/SPANet file loading
strictly through the registry's builder arguments."""
from __future__ import annotations

import copy
import hashlib
import subprocess

import pytest
import yaml

from benchmark.datasets import transfer
from benchmark.tools import weights_cli
from benchmark.tools.cli import main as cli_main
from benchmark.weights import registry

from .helpers.dataset_fixtures import server  # noqa: F401

REG = registry.load_registry()


def _shared_file(shared, spec):
    if spec.repository == "csdwren/PReNet":
        return shared / "official_weights" / "prenet" / spec.path
    if spec.repository == "stevewongv/SPANet":
        return shared / "official_weights" / "spanet" / "SPANet_SPA.pth"
    return None


def _one(tmp_path, name, **changes):
    """A registry file holding one real entry, with ``changes`` applied."""
    raw = yaml.safe_load(registry.REGISTRY_PATH.read_text())
    entry = copy.deepcopy(raw["checkpoints"][name])
    entry.update(changes)
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "checkpoints": {name: entry}}))
    return path


def test_registry_covers_every_official_prenet_file_and_spanet():
    prenet = [s for s in REG.values() if s.repository == "csdwren/PReNet"]
    assert len(prenet) == 20 and len({s.path for s in prenet}) == 20
    assert all(s.sha256 and s.git_blob_sha1 and s.size for s in prenet + [REG["spanet-spa"]])
    assert REG["prenet6-rain100h"].published[0].psnr == 29.46 and REG["prn6-r-rain100h"].published[0].psnr == 27.43
    assert {p.test_set for p in REG["prenet6-rain100l"].published} == {"rain100l", "rain12"}
    for s in REG.values():
        if s.commit:
            assert all(s.commit in u for u in s.urls[:1]), s.name
        if s.sha256 is None:
            assert s.status, s.name
    assert {s.model for s in REG.values() if s.source == "manual"} == {"dcsfn", "mspfn", "moss"}
    assert not any(s.model == "msgnn" for s in REG.values())  # MSGNN publishes none


@pytest.mark.parametrize("change, message", [
    ({"sha256": "ABC"}, "sha256 must be 64"),
    ({"source": "ftp"}, "source must be"),
    ({"urls": ["https://example.invalid/other/commit/file"]}, "pinned to the recorded commit"),
    ({"train_set": "rain9999"}, "not a key of datasets.yaml"),
    ({"published": [{"test_set": "rain100h", "psnr": 1, "ssim": 1, "protocol": "nope", "source": "x"}]}, "protocol"),
    ({"sha256": None}, "says why in 'status'"),
    ({"colour": "red"}, "unknown field"),
])
def test_registry_is_validated_on_load(tmp_path, change, message):
    with pytest.raises(registry.RegistryError, match=message):
        registry.load_registry(_one(tmp_path, "prenet6-rain100h", **change))


def test_shared_files_match_the_registry(shared):
    for spec in REG.values():
        f = _shared_file(shared, spec)
        if f is None:
            continue
        assert transfer.sha256_file(f) == spec.sha256, spec.name
        assert transfer.git_blob_sha1(f) == spec.git_blob_sha1, spec.name
        # the blob id is git's own: the same as `git hash-object`
        if spec.name == "spanet-spa":
            assert subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True,
                                  check=True).stdout.strip() == spec.git_blob_sha1


def _serve(server, tmp_path, shared, name):  # noqa: F811
    spec = REG[name]
    body = _shared_file(shared, spec).read_bytes()
    server.files["/" + spec.file] = body
    return _one(tmp_path, name, urls=[server.url("/" + spec.file)], commit=None, repository=None, path=None), body


def test_download_resumes_verifies_and_reports(server, tmp_path, shared, capsys):  # noqa: F811
    reg, body = _serve(server, tmp_path, shared, "prn6-r-rain100h")
    server.cut_first["/net_latest.pth"] = len(body) // 3  # the first transfer drops a third of the way
    root = tmp_path / "w"
    rc = cli_main(["weights", "download", "prn6-r-rain100h", "--root", str(root), "--registry", str(reg)])
    assert rc == 0
    dest = root / "prn6-r-rain100h" / "net_latest.pth"
    assert dest.read_bytes() == body
    assert [r for _, r in server.requests] == [None, f"bytes={len(body) // 3}-"]  # resumed, not restarted
    assert capsys.readouterr().out.strip() == str(dest)
    assert cli_main(["weights", "verify", "prn6-r-rain100h", "--root", str(root), "--registry", str(reg)]) == 0
    assert "OK (size, sha256, git_blob_sha1)" in capsys.readouterr().out
    assert cli_main(["weights", "path", "prn6-r-rain100h", "--root", str(root), "--registry", str(reg)]) == 0
    assert capsys.readouterr().out.strip() == str(dest.resolve())
    assert cli_main(["weights", "list", "--root", str(root), "--registry", str(reg)]) == 0
    assert "verified" in capsys.readouterr().out
    # a damaged file is seen by verify and by list
    dest.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))
    assert cli_main(["weights", "verify", "prn6-r-rain100h", "--root", str(root), "--registry", str(reg)]) == 1
    assert "sha256" in capsys.readouterr().err
    assert weights_cli.status(registry.get("prn6-r-rain100h", reg), root) == "present (checksum mismatch)"


def test_a_wrong_file_is_refused_and_not_kept(server, tmp_path, shared, capsys):  # noqa: F811
    reg, body = _serve(server, tmp_path, shared, "prn6-r-rain100h")
    server.files["/net_latest.pth"] = body[:-10] + b"0123456789"  # same size, other bytes
    root = tmp_path / "w"
    assert cli_main(["weights", "download", "prn6-r-rain100h", "--root", str(root), "--registry", str(reg)]) == 1
    assert "differs from the registry" in capsys.readouterr().err
    assert not any((root / "prn6-r-rain100h").iterdir())  # neither the file nor a .part


def test_blob_id_alone_is_checked_and_sha256_reported(server, tmp_path, shared, capsys):  # noqa: F811
    """An entry recorded only by git blob id (RCDNet-style): the blob id is checked, the sha256 printed."""
    spec = REG["spanet-spa"]
    body = (shared / "official_weights" / "spanet" / "SPANet_SPA.pth").read_bytes()
    server.files["/latest"] = body
    reg = _one(tmp_path, "spanet-spa", urls=[server.url("/latest")], commit=None, repository=None, path=None,
               sha256=None, size=None, status=registry.FIRST_DOWNLOAD)
    root = tmp_path / "w"
    assert cli_main(["weights", "download", "spanet-spa", "--root", str(root), "--registry", str(reg)]) == 0
    err = capsys.readouterr().err
    assert hashlib.sha256(body).hexdigest() in err and registry.FIRST_DOWNLOAD in err
    assert weights_cli.status(registry.get("spanet-spa", reg), root) == "present (sha256 not recorded)"
    bad = _one(tmp_path, "spanet-spa", urls=[server.url("/latest")], commit=None, repository=None, path=None,
               sha256=None, size=None, status="x", git_blob_sha1="0" * 40)
    assert cli_main(["weights", "download", "spanet-spa", "--force", "--root", str(tmp_path / "v"),
                     "--registry", str(bad)]) == 1
    assert "git_blob_sha1" in capsys.readouterr().err
    assert spec.sha256 == hashlib.sha256(body).hexdigest()


def test_offline_is_one_line_naming_checkpoint_and_url(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(transfer, "RETRY_DELAY_S", 0.0)
    url = "http://127.0.0.1:9/prenet/net_latest.pth"  # discard port: connection refused
    reg = _one(tmp_path, "prenet6-rain100h", urls=[url], commit=None, repository=None, path=None)
    rc = cli_main(["weights", "download", "prenet6-rain100h", "--root", str(tmp_path / "w"), "--registry", str(reg)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "prenet6-rain100h" in err and url in err and "offline" in err


def test_manual_source_names_the_step(tmp_path, capsys):
    assert cli_main(["weights", "download", "moss", "--root", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "Google Drive" in err and "--from" in err
    assert cli_main(["weights", "list", "--root", str(tmp_path)]) == 0
    rows = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == set(REG)
    assert "manual" in rows["moss"] and "missing" in rows["prenet6-rain100h"]


def test_download_from_a_local_file(tmp_path, shared, capsys):
    src = shared / "official_weights" / "prenet" / "PReNet6_Rain100L.pth"
    assert cli_main(["weights", "download", "prenet6-rain100l", "--from", str(src), "--root", str(tmp_path)]) == 0
    assert weights_cli.status(REG["prenet6-rain100l"], tmp_path) == "verified"
    wrong = shared / "official_weights" / "prenet" / "PReNet6_Rain100H.pth"
    assert cli_main(["weights", "download", "prenet6-rain100l", "--force",
                     "--from", str(wrong), "--root", str(tmp_path / "b")]) == 1


@pytest.mark.parametrize("name", sorted(n for n, s in REG.items() if s.model in ("prenet", "spanet")))
def test_every_prenet_and_spanet_checkpoint_loads_strictly_with_its_registry_arguments(shared, name):
    from benchmark.core.contract import count_params
    from benchmark.core.official import read_state
    from benchmark.core.registry import build_model, load_official

    spec = REG[name]
    f = _shared_file(shared, spec)
    model = load_official(spec.model, f, **spec.args)  # strict: every tensor used, every one of ours filled
    assert count_params(model)["total"] == count_params(build_model(spec.model, **spec.args))["total"]
    if spec.model == "prenet":  # plain state dicts of parameters only: the counts equal the file's
        assert count_params(model)["total"] == sum(v.numel() for v in read_state(f, "PReNet").values())
