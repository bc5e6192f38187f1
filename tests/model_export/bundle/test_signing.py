"""``tailor bundle keygen|sign|verify --public-key``, ``tailor inspect --public-key`` and
signing when a bundle is written (``with_policy``)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import msgspec
import pytest

from model_export.bundle.lifecycle import PolicyConfig, with_policy
from model_export.bundle.signing import SigningError, generate_key_pair
from model_export.cli import main as cli_main
from sdk import BundleSignatureError, load_bundle
from sdk.bundle import SIGNATURE_FILE


def test_keygen_writes_a_private_key_only_its_owner_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["bundle", "keygen", "--out", str(tmp_path), "--json"]) == 0
    pair = json.loads(capsys.readouterr().out)
    private = Path(pair["private_key"])
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert Path(pair["public_key"]).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert len(pair["key_id"]) == 16
    assert cli_main(["bundle", "keygen", "--out", str(tmp_path)]) == 1  # never overwritten
    with pytest.raises(SigningError):
        generate_key_pair(tmp_path)


def test_sign_then_verify_and_inspect_with_the_public_key(
    bundle_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair = generate_key_pair(tmp_path / "keys")
    other = generate_key_pair(tmp_path / "other")
    bundle, pub = str(bundle_copy), str(pair.public_key)
    assert cli_main(["bundle", "verify", bundle, "--public-key", pub]) == 1
    assert "unsigned" in capsys.readouterr().out
    assert cli_main(["bundle", "verify", bundle]) == 0
    assert "unsigned" in capsys.readouterr().out
    assert cli_main(["bundle", "sign", bundle, "--key", str(pair.private_key)]) == 0
    assert pair.key_id in capsys.readouterr().out
    assert cli_main(["bundle", "verify", bundle, "--public-key", pub, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and f"trusted key {pair.key_id}" in out["signature"]
    assert cli_main(["inspect", bundle, "--public-key", pair.public_raw_b64]) == 0
    assert f"signed by trusted key {pair.key_id}" in capsys.readouterr().out
    assert cli_main(["inspect", bundle, "--public-key", str(other.public_key)]) == 1
    assert "not trusted" in " ".join(capsys.readouterr().out.split())  # rich wraps lines
    assert cli_main(["bundle", "sign", bundle, "--key", str(bundle_copy / "nope.key")]) == 1


def test_with_policy_signs_the_new_manifest(
    bundle_copy: Path, tmp_path: Path, policy_bundle_dir: Path
) -> None:
    pair = generate_key_pair(tmp_path / "keys")
    out = tmp_path / "policy"
    policy = msgspec.convert({"exploration": {"epsilon": 0.05}}, PolicyConfig)
    manifest = with_policy(bundle_copy, out, policy, "signed", signing_key=pair.private_key)
    assert SIGNATURE_FILE not in manifest.files  # the one file outside the hash list
    assert load_bundle(out, public_keys=[str(pair.public_key)]).version == manifest.model_version
    unsigned = tmp_path / "unsigned"
    with_policy(bundle_copy, unsigned, policy, "unsigned")
    with pytest.raises(BundleSignatureError):
        load_bundle(unsigned, public_keys=[str(pair.public_key)])


def test_train_publishes_the_bundle_signed(tmp_path: Path) -> None:
    pair = generate_key_pair(tmp_path / "keys")
    out = tmp_path / "bundle"
    argv = ["train", "--out", str(out), "--visitors", "1500", "--segments", "4", "--seed", "3"]
    assert cli_main([*argv, "--signing-key", str(pair.private_key)]) == 0
    # published with its signature: a server trusting the key loads it, another key is refused
    assert load_bundle(out, public_keys=[str(pair.public_key)]).manifest.model_version
    other = generate_key_pair(tmp_path / "other")
    with pytest.raises(BundleSignatureError):
        load_bundle(out, public_keys=[str(other.public_key)])


def test_train_refuses_an_unreadable_signing_key_before_training(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----\n")
    out = tmp_path / "bundle"
    assert (
        cli_main(["train", "--out", str(out), "--visitors", "1500", "--signing-key", str(bad)]) == 1
    )
    assert not out.exists()  # nothing trained, nothing published
