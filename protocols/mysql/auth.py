"""MySQL/MariaDB authentication plugins, both sides: what a client sends for a password and a
server's nonce, and how a server checks it against what it stores. Pure functions.

- ``mysql_native_password``: SHA1-based; the server stores SHA1(SHA1(password)).
- ``caching_sha2_password`` (MySQL 8): the fast path's SHA-256 scramble, the server storing
  SHA256(SHA256(password)); for full authentication without TLS, the password encrypted with
  the server's RSA public key (OAEP), via ``cryptography``.
- ``client_ed25519`` (MariaDB): an Ed25519 signature of the nonce whose secret is
  SHA-512(password) (any length, so not a standard 32-byte seed: the signing arithmetic is
  here); the server stores the public key. Verification is standard Ed25519 (``cryptography``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


# -- mysql_native_password ------------------------------------------------------------------------

def native_stored(password: bytes) -> bytes:
    """What a server keeps: SHA1(SHA1(password))."""
    return hashlib.sha1(hashlib.sha1(password).digest()).digest()


def native_verify(token: bytes, nonce: bytes, stored: bytes) -> bool:
    """A client's answer checked against SHA1(SHA1(password)); an empty token means an
    empty password."""
    if not token:
        return stored == b""
    if len(token) != 20 or len(stored) != 20:
        return False
    stage1 = _xor(token, hashlib.sha1(nonce[:20] + stored).digest())
    return hmac.compare_digest(hashlib.sha1(stage1).digest(), stored)


# -- caching_sha2_password ------------------------------------------------------------------------

def sha2_scramble(password: bytes, nonce: bytes) -> bytes:
    """XOR(SHA256(p), SHA256(SHA256(SHA256(p)) + nonce)); empty for an empty password."""
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(p1).digest()
    return _xor(p1, hashlib.sha256(p2 + nonce[:20]).digest())


def sha2_stored(password: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(password).digest()).digest()


def sha2_verify(token: bytes, nonce: bytes, stored: bytes) -> bool:
    if len(token) != 32 or len(stored) != 32:
        return False
    p1 = _xor(token, hashlib.sha256(stored + nonce[:20]).digest())
    return hmac.compare_digest(hashlib.sha256(p1).digest(), stored)


def sha2_rsa_password(password: bytes, nonce: bytes, public_key_pem: bytes) -> bytes:
    """Full authentication without TLS: (password + NUL) XOR the nonce, RSA-OAEP encrypted
    with the server's public key (MySQL 8.0.5 and later use OAEP with SHA-1)."""
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the server's public key is not an RSA key")
    plain = password + b"\0"
    mixed = bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(plain))
    return key.encrypt(mixed, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                           algorithm=hashes.SHA1(), label=None))


# -- client_ed25519 (MariaDB) ---------------------------------------------------------------------

_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_Point = tuple[int, int, int, int]


def _add(a: _Point, b: _Point) -> _Point:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % _P
    bb = (y1 + x1) * (y2 + x2) % _P
    cc = 2 * t1 * t2 * _D % _P
    dd = 2 * z1 * z2 % _P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _mul(s: int, p: _Point) -> _Point:
    q: _Point = (0, 1, 1, 0)
    while s:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _encode(p: _Point) -> bytes:
    x, y, z, _ = p
    zi = pow(z, _P - 2, _P)
    x, y = x * zi % _P, y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _base() -> _Point:
    y = 4 * pow(5, _P - 2, _P) % _P
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    if x & 1:
        x = _P - x
    return x, y, 1, x * y % _P


_B = _base()


def _secret(password: bytes) -> tuple[int, bytes]:
    h = hashlib.sha512(password).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def ed25519_public(password: bytes) -> bytes:
    """The 32-byte public key MariaDB stores (base64 of it is what PASSWORD() shows)."""
    return _encode(_mul(_secret(password)[0], _B))


def ed25519_sign(password: bytes, nonce: bytes) -> bytes:
    """What client_ed25519 sends for a nonce: a 64-byte Ed25519 signature."""
    a, prefix = _secret(password)
    public = _encode(_mul(a, _B))
    r = int.from_bytes(hashlib.sha512(prefix + nonce).digest(), "little") % _L
    big_r = _encode(_mul(r, _B))
    k = int.from_bytes(hashlib.sha512(big_r + public + nonce).digest(), "little") % _L
    return big_r + ((r + k * a) % _L).to_bytes(32, "little")


def ed25519_verify(signature: bytes, nonce: bytes, public: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, nonce)
    except (InvalidSignature, ValueError):
        return False
    return True


def ed25519_stored_text(password: bytes) -> str:
    """The stored form as MariaDB prints it: base64 without padding."""
    return base64.b64encode(ed25519_public(password)).decode().rstrip("=")
