"""Access control: verifying and minting the JSON Web Tokens that grant upload, download and
admin access, and deciding whether a verified token grants a request.

A token carries ``scope`` (space-separated: ``upload``, ``download``, ``admin``), an audience,
an expiry, and optionally a binding: ``resource`` for a download token, ``context`` for an
upload token. Verification says *why* a token is refused, so that a client can tell an expired
token from a wrongly signed one; authorization is decided before anything is looked up, so a
refusal never reveals whether a resource exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from livefile.api.errors import AuthenticationError, AuthorizationError

MIN_SECRET_BYTES = 32  # RFC 7518 section 3.2: an HS256 key at least as long as the hash


class Scope(StrEnum):
    UPLOAD = "upload"
    DOWNLOAD = "download"
    ADMIN = "admin"


@dataclass(frozen=True)
class Grant:
    """What a verified token allows."""

    scopes: frozenset[Scope]
    resource_id: str | None = None  # a download token for this resource only
    context_id: str | None = None  # an upload token for this upload context only
    subject: str | None = None
    # Which token this is (its ``jti``, else a digest of it): the resources an upload creates
    # remember it, so that the same token may delete them while they run. Not part of what
    # the grant allows, so not compared.
    token_id: str | None = field(default=None, compare=False)

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    def authorize_download(self, resource_id: str) -> None:
        """Reading a resource: its status, bytes, lines and events."""
        if self.is_admin:
            return
        if Scope.DOWNLOAD not in self.scopes:
            raise AuthorizationError("token scope does not include download")
        if self.resource_id is not None and self.resource_id != resource_id:
            raise AuthorizationError("token is for another resource")

    def authorize_upload(self, context_id: str | None) -> str | None:
        """Creating a resource, in ``context_id`` if given. Returns the context the upload joins:
        a token bound to a context puts uploads that name none into it."""
        if self.is_admin:
            return context_id
        if Scope.UPLOAD not in self.scopes:
            raise AuthorizationError("token scope does not include upload")
        if self.context_id is None:
            return context_id
        if context_id is not None and context_id != self.context_id:
            raise AuthorizationError("token is bound to another upload context")
        return self.context_id

    def authorize_context(self, context_id: str) -> None:
        """Describing a context or following its events: admins, and uploaders bound to it."""
        if self.is_admin:
            return
        if Scope.UPLOAD in self.scopes and self.context_id == context_id:
            return
        raise AuthorizationError("token grants no access to this upload context")

    def authorize_admin(self) -> None:
        """Everything else: opening and closing contexts, metrics."""
        if not self.is_admin:
            raise AuthorizationError("token scope does not include admin")


UNRESTRICTED = Grant(frozenset({Scope.ADMIN}))  # what every request has without access control


class TokenAuthority:
    """Verifies tokens with the configured key and, given a signing key, mints them."""

    def __init__(
        self,
        verification_key: Any,
        algorithm: str,
        signing_key: Any | None,
        audience: str = "livefile",
        issuer: str | None = None,
        leeway: float = 10.0,
    ) -> None:
        self._verification_key = verification_key
        self.algorithm = algorithm
        self._signing_key = signing_key
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway

    @classmethod
    def from_settings(
        cls,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        private_key: str | None = None,
        audience: str = "livefile",
        issuer: str | None = None,
        leeway: float = 10.0,
    ) -> TokenAuthority | None:
        """The authority for the configured keys, or None when none is configured (access
        control off). Keys are PEM text or the path of a PEM file. Raises ValueError for an
        unusable key or an ambiguous configuration."""
        if secret is not None:
            if public_key is not None or private_key is not None:
                raise ValueError("configure either a JWT secret or a key pair, not both")
            if len(secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes long")
            return cls(secret, "HS256", secret, audience, issuer, leeway)
        signing_key = None
        if private_key is not None:
            signing_key = serialization.load_pem_private_key(_pem(private_key), password=None)
            derived = signing_key.public_key()
            if public_key is not None and _public_pem(derived) != _public_pem(
                serialization.load_pem_public_key(_pem(public_key))
            ):
                raise ValueError("the JWT public key does not belong to the private key")
            verification_key: Any = derived
        elif public_key is not None:
            verification_key = serialization.load_pem_public_key(_pem(public_key))
        else:
            return None
        return cls(
            verification_key,
            _algorithm_for(verification_key),
            signing_key,
            audience,
            issuer,
            leeway,
        )

    @property
    def can_sign(self) -> bool:
        return self._signing_key is not None

    def verify(self, token: str | None) -> Grant:
        """The grant of ``token``; AuthenticationError says why a token is not accepted."""
        if not token:
            raise AuthenticationError(
                "a token is required (Authorization: Bearer <token>, or ?token=<token>)"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthenticationError("malformed token") from None
        if header.get("alg") != self.algorithm:
            raise AuthenticationError(
                f"token algorithm {str(header.get('alg'))[:16]!r} is not accepted"
                f" (expected {self.algorithm})"
            )
        try:
            claims = jwt.decode(
                token,
                self._verification_key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "aud"] + (["iss"] if self.issuer else [])},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("token not yet valid (nbf)") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError(f"token audience is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError(f"token issuer is not {self.issuer!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("token signature is invalid") from None
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(f"invalid token: {exc}"[:100]) from None
        jti: Any = claims.get("jti")
        token_id = (
            jti if isinstance(jti, str) and jti else hashlib.sha256(token.encode()).hexdigest()
        )
        return dataclasses.replace(_grant_of(claims), token_id=token_id)

    def mint(
        self,
        scopes: Iterable[Scope],
        ttl: float,
        *,
        resource_id: str | None = None,
        context_id: str | None = None,
        subject: str | None = None,
    ) -> str:
        """A token for ``scopes`` valid ``ttl`` seconds from now."""
        if self._signing_key is None:
            raise ValueError("no signing key: configure a JWT secret or a private key")
        issued = int(time.time())
        claims: dict[str, Any] = {
            "aud": self.audience,
            "iat": issued,
            "exp": issued + int(ttl),
            "jti": uuid.uuid4().hex,
            "scope": " ".join(sorted(Scope(scope).value for scope in scopes)),
        }
        if self.issuer is not None:
            claims["iss"] = self.issuer
        if subject is not None:
            claims["sub"] = subject
        if resource_id is not None:
            claims["resource"] = resource_id
        if context_id is not None:
            claims["context"] = context_id
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm)


def _grant_of(claims: dict[str, Any]) -> Grant:
    scope_claim = claims.get("scope")
    names = scope_claim.split() if isinstance(scope_claim, str) else []
    known = {scope.value for scope in Scope}
    scopes = frozenset(Scope(name) for name in names if name in known)
    if not scopes:
        raise AuthorizationError("token grants none of the scopes upload, download, admin")
    resource_id, context_id, subject = (claims.get(name) for name in ("resource", "context", "sub"))
    return Grant(
        scopes=scopes,
        resource_id=resource_id if isinstance(resource_id, str) else None,
        context_id=context_id if isinstance(context_id, str) else None,
        subject=subject if isinstance(subject, str) else None,
    )


def _pem(key: str) -> bytes:
    """PEM text as given, or read from the file it names."""
    if "-----BEGIN" in key:
        return key.encode()
    return Path(key).expanduser().read_bytes()


def _public_pem(key: Any) -> bytes:
    pem: bytes = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def _algorithm_for(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]
    raise ValueError(f"unsupported JWT key type {type(key).__name__}")
