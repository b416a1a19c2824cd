"""SCRAM-SHA-256 (RFC 5802 / RFC 7677) and MD5 password exchanges, as sans-IO state machines.

Both sides live here: ``ScramServer`` checks a client against a stored verifier (so Wiregate never
keeps a client password in clear), ``ScramClient`` logs Wiregate into an upstream server.
Channel binding is not offered (``n,,`` / ``SCRAM-SHA-256`` only), as libpq negotiates down to that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096
_MOCK_KEY = secrets.token_bytes(32)  # per process (shared by forked workers)


class ScramError(Exception):
    """The exchange failed: bad proof, malformed message or mismatched nonce."""


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _saslprep(password: str) -> bytes:
    # PostgreSQL falls back to the raw bytes when SASLprep fails; plain ASCII is unchanged by it.
    import stringprep
    import unicodedata

    try:
        mapped = "".join(" " if stringprep.in_table_c12(c) else c
                         for c in password if not stringprep.in_table_b1(c))
        norm = unicodedata.normalize("NFKC", mapped)
        for c in norm:
            if stringprep.in_table_c21_c22(c) or stringprep.in_table_a1(c):
                return password.encode()
        return norm.encode()
    except Exception:
        return password.encode()


@dataclass(frozen=True)
class Verifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes


def make_verifier(password: str, iterations: int = DEFAULT_ITERATIONS,
                  salt: bytes | None = None) -> str:
    """Return a verifier in PostgreSQL's ``SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`` form."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    stored = _h(client_key)
    server = _hmac(salted, b"Server Key")
    b64 = base64.b64encode
    return (f"{MECHANISM}${iterations}:{b64(salt).decode()}$"
            f"{b64(stored).decode()}:{b64(server).decode()}")


def parse_verifier(text: str) -> Verifier:
    try:
        mech, params, keys = text.split("$")
        iters, salt = params.split(":")
        stored, server = keys.split(":")
        if mech != MECHANISM:
            raise ValueError
        v = Verifier(int(iters), base64.b64decode(salt, validate=True),
                     base64.b64decode(stored, validate=True),
                     base64.b64decode(server, validate=True))
    except ValueError:
        raise ValueError(
            "not a SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iterations>:<salt>$"
            "<StoredKey>:<ServerKey>, as printed by `wiregate passwd`)") from None
    if v.iterations < 1 or len(v.stored_key) != 32 or len(v.server_key) != 32:
        raise ValueError("SCRAM-SHA-256 verifier has wrong key lengths or iteration count")
    return v


def _parse_attrs(msg: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in msg.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError(f"malformed SCRAM attribute {part[:20]!r}")
        out.setdefault(part[0], part[2:])
    return out


class ScramServer:
    """Server side: verify a client's proof against a stored verifier."""

    def __init__(self, verifier: Verifier | None, user: str = "") -> None:
        # With no verifier (unknown user) run a mock exchange so timing and messages do not
        # reveal whether the user exists; it always fails at the proof. The mock salt is
        # stable per user name, as a real user's salt is, so two attempts cannot tell apart.
        self._mock = verifier is None
        self._v = verifier or Verifier(DEFAULT_ITERATIONS, _hmac(_MOCK_KEY, user.encode())[:16],
                                       secrets.token_bytes(32), secrets.token_bytes(32))
        self._cbind = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self.done = False

    def first(self, client_first: bytes) -> bytes:
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScramError("client-first-message is not UTF-8") from exc
        if text.startswith("p="):
            raise ScramError("channel binding is not supported by this server")
        if not (text.startswith("n,") or text.startswith("y,")):
            raise ScramError("malformed client-first-message")
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise ScramError("malformed client-first-message")
        self._client_first_bare = parts[2]
        self._cbind = base64.b64encode((parts[0] + "," + parts[1] + ",").encode()).decode()
        attrs = _parse_attrs(self._client_first_bare)
        cnonce = attrs.get("r", "")
        if not cnonce:
            raise ScramError("client nonce missing")
        self._nonce = cnonce + base64.b64encode(secrets.token_bytes(18)).decode()
        self._server_first = (f"r={self._nonce},s={base64.b64encode(self._v.salt).decode()},"
                              f"i={self._v.iterations}")
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        try:
            text = client_final.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScramError("client-final-message is not UTF-8") from exc
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise ScramError("client proof missing")
        attrs = _parse_attrs(without_proof)
        if attrs.get("r") != self._nonce:
            raise ScramError("nonce mismatch")
        if attrs.get("c") != self._cbind:  # must echo the client-first GS2 header
            raise ScramError("unexpected channel binding data")
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError as exc:
            raise ScramError("client proof is not base64") from exc
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(self._v.stored_key, auth_message)
        if len(proof) != 32:
            raise ScramError("password authentication failed")
        client_key = _xor(proof, signature)
        if self._mock or not hmac.compare_digest(_h(client_key), self._v.stored_key):
            raise ScramError("password authentication failed")
        self.done = True
        server_sig = _hmac(self._v.server_key, auth_message)
        return b"v=" + base64.b64encode(server_sig)


class ScramClient:
    """Client side: log in to an upstream server with a password Wiregate holds."""

    def __init__(self, password: str) -> None:
        self._password = _saslprep(password)
        self._cnonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self._client_first_bare = f"n=,r={self._cnonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self._client_first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode("utf-8", "replace")
        attrs = _parse_attrs(text)
        nonce, salt_b64, iters = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if (not nonce.startswith(self._cnonce) or not salt_b64 or not iters.isascii()
                or not iters.isdigit() or int(iters) < 1):
            raise ScramError("malformed server-first-message from upstream")
        try:
            salt = base64.b64decode(salt_b64, validate=True)
        except ValueError as exc:
            raise ScramError("malformed server-first-message from upstream") from exc
        salted = hashlib.pbkdf2_hmac("sha256", self._password, salt, int(iters))
        client_key = _hmac(salted, b"Client Key")
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{text},{without_proof}".encode()
        proof = _xor(client_key, _hmac(_h(client_key), auth_message))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        attrs = _parse_attrs(server_final.decode("utf-8", "replace"))
        if "e" in attrs:
            raise ScramError(f"upstream rejected SCRAM: {attrs['e']}")
        try:
            got = base64.b64decode(attrs.get("v", ""), validate=True)
        except ValueError as exc:
            raise ScramError("malformed server-final-message from upstream") from exc
        if not hmac.compare_digest(got, self._server_signature):
            raise ScramError("upstream server signature does not verify")


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    """The ``md5``-prefixed response PostgreSQL expects for AuthenticationMD5Password."""
    inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode()
