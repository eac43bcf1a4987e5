"""Tokens: what the authority accepts, why it refuses, and what a grant allows."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from livefile.api.errors import AuthenticationError, AuthorizationError
from livefile.impl_server.access import UNRESTRICTED, Grant, Scope, TokenAuthority

SECRET = "s" * 32
RESOURCE = "a" * 32
OTHER = "b" * 32


@pytest.fixture
def authority() -> TokenAuthority:
    found = TokenAuthority.from_settings(secret=SECRET)
    assert found is not None
    return found


def claims(**extra: object) -> dict[str, object]:
    """Valid claims plus ``extra``. They live a day, since parameters are built while collecting
    and a slow suite must not let them expire before their test runs."""
    now = int(time.time())
    return {"aud": "livefile", "iat": now, "exp": now + 86400, "scope": "download", **extra}


def test_no_key_means_access_control_is_off() -> None:
    assert TokenAuthority.from_settings() is None


def test_a_minted_token_verifies_to_its_grant(authority: TokenAuthority) -> None:
    token = authority.mint([Scope.DOWNLOAD], 60, resource_id=RESOURCE, subject="ci")
    assert authority.verify(token) == Grant(
        frozenset({Scope.DOWNLOAD}), resource_id=RESOURCE, subject="ci"
    )


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenAuthority.from_settings(secret="short")


def test_a_secret_and_a_key_pair_together_are_refused() -> None:
    with pytest.raises(ValueError, match="either"):
        TokenAuthority.from_settings(secret=SECRET, public_key="-----BEGIN nothing")


@pytest.mark.parametrize(
    ("token_claims", "reason"),
    [
        (claims(exp=int(time.time()) - 3600), "token expired"),
        (claims(nbf=int(time.time()) + 3600), "token not yet valid"),
        (claims(aud="someone-else"), "token audience is not 'livefile'"),
        ({"aud": "livefile", "scope": "download"}, "token has no 'exp' claim"),
        ({"exp": int(time.time()) + 86400, "scope": "download"}, "token has no 'aud' claim"),
    ],
    ids=["expired", "not-yet-valid", "wrong-audience", "no-expiry", "no-audience"],
)
def test_each_defect_is_refused_with_its_reason(
    authority: TokenAuthority, token_claims: dict[str, object], reason: str
) -> None:
    token = jwt.encode(token_claims, SECRET, algorithm="HS256")
    with pytest.raises(AuthenticationError, match=reason):
        authority.verify(token)


def test_a_token_signed_with_another_key_is_refused(authority: TokenAuthority) -> None:
    token = jwt.encode(claims(), "x" * 32, algorithm="HS256")
    with pytest.raises(AuthenticationError, match="signature is invalid"):
        authority.verify(token)


def test_an_unsigned_token_is_refused(authority: TokenAuthority) -> None:
    token = jwt.encode(claims(), "", algorithm="none")
    with pytest.raises(AuthenticationError, match="algorithm 'none' is not accepted"):
        authority.verify(token)


def test_a_token_of_another_algorithm_is_refused(authority: TokenAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(), key, algorithm="ES256")
    with pytest.raises(AuthenticationError, match="algorithm 'ES256' is not accepted"):
        authority.verify(token)


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "x" * 10_000])
def test_malformed_or_missing_tokens_are_refused(authority: TokenAuthority, token: str) -> None:
    with pytest.raises(AuthenticationError):
        authority.verify(token)


def test_a_token_with_no_livefile_scope_grants_nothing(authority: TokenAuthority) -> None:
    token = jwt.encode(claims(scope="read write"), SECRET, algorithm="HS256")
    with pytest.raises(AuthorizationError, match="none of the scopes"):
        authority.verify(token)


def test_an_issuer_when_configured_is_required() -> None:
    authority = TokenAuthority.from_settings(secret=SECRET, issuer="ci.example")
    assert authority is not None
    with pytest.raises(AuthenticationError, match="no 'iss' claim"):
        authority.verify(jwt.encode(claims(), SECRET, algorithm="HS256"))
    assert authority.verify(authority.mint([Scope.ADMIN], 60)).is_admin


PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def pem_files(folder: Path, private_key: PrivateKey) -> tuple[str, str]:
    """Write the key pair as PEM files; returns their paths (private, public)."""
    folder.mkdir(parents=True, exist_ok=True)
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (folder / "private.pem").write_bytes(private_pem)
    (folder / "public.pem").write_bytes(public_pem)
    return str(folder / "private.pem"), str(folder / "public.pem")


@pytest.mark.parametrize(
    ("private_key", "algorithm"),
    [
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    ],
    ids=["ed25519", "rsa"],
)
def test_a_public_key_verifies_what_its_private_key_signs(
    tmp_path: Path, private_key: PrivateKey, algorithm: str
) -> None:
    private_path, public_path = pem_files(tmp_path, private_key)
    signer = TokenAuthority.from_settings(private_key=private_path)
    verifier = TokenAuthority.from_settings(public_key=public_path)
    assert signer is not None
    assert verifier is not None
    assert (signer.algorithm, verifier.algorithm) == (algorithm, algorithm)
    assert not verifier.can_sign
    grant = verifier.verify(signer.mint([Scope.UPLOAD], 60, context_id=OTHER))
    assert grant == Grant(frozenset({Scope.UPLOAD}), context_id=OTHER)


def test_a_public_key_of_another_pair_is_refused(tmp_path: Path) -> None:
    private_path, _ = pem_files(tmp_path / "one", ed25519.Ed25519PrivateKey.generate())
    _, other_public = pem_files(tmp_path / "two", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ValueError, match="does not belong"):
        TokenAuthority.from_settings(private_key=private_path, public_key=other_public)


def test_download_grant_is_for_its_resource_only() -> None:
    grant = Grant(frozenset({Scope.DOWNLOAD}), resource_id=RESOURCE)
    grant.authorize_download(RESOURCE)
    with pytest.raises(AuthorizationError, match="another resource"):
        grant.authorize_download(OTHER)
    with pytest.raises(AuthorizationError, match="does not include upload"):
        grant.authorize_upload(None)


def test_upload_grant_bound_to_a_context_puts_uploads_there() -> None:
    grant = Grant(frozenset({Scope.UPLOAD}), context_id=RESOURCE)
    assert grant.authorize_upload(None) == RESOURCE
    assert grant.authorize_upload(RESOURCE) == RESOURCE
    with pytest.raises(AuthorizationError, match="another upload context"):
        grant.authorize_upload(OTHER)
    grant.authorize_context(RESOURCE)
    with pytest.raises(AuthorizationError):
        grant.authorize_context(OTHER)
    with pytest.raises(AuthorizationError, match="does not include download"):
        grant.authorize_download(RESOURCE)


def test_unbound_upload_grant_uploads_anywhere_but_administers_nothing() -> None:
    grant = Grant(frozenset({Scope.UPLOAD}))
    assert grant.authorize_upload(OTHER) == OTHER
    with pytest.raises(AuthorizationError, match="admin"):
        grant.authorize_admin()
    with pytest.raises(AuthorizationError):
        grant.authorize_context(OTHER)


def test_admin_and_the_unrestricted_grant_allow_everything() -> None:
    for grant in (Grant(frozenset({Scope.ADMIN})), UNRESTRICTED):
        grant.authorize_download(RESOURCE)
        assert grant.authorize_upload(OTHER) == OTHER
        grant.authorize_context(OTHER)
        grant.authorize_admin()


def test_a_grant_names_its_token_by_jti_or_else_by_digest() -> None:
    authority = TokenAuthority.from_settings(secret="s" * 32)
    assert authority is not None
    minted = authority.mint([Scope.UPLOAD], 60)
    assert (
        authority.verify(minted).token_id
        == jwt.decode(minted, options={"verify_signature": False})["jti"]
    )
    now = int(time.time())
    bare = jwt.encode({"aud": "livefile", "exp": now + 60, "scope": "upload"}, "s" * 32)
    assert authority.verify(bare).token_id == hashlib.sha256(bare.encode()).hexdigest()
