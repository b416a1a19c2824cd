"""SCRAM-SHA-256 and MD5 password exchanges, checked against RFC 5802 / RFC 7677 directly."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.postgres import scram
from protocols.postgres.scram import (
    DEFAULT_ITERATIONS,
    MECHANISM,
    ScramClient,
    ScramError,
    ScramServer,
    make_verifier,
    md5_password,
    parse_verifier,
)

# RFC 7677 section 3 example exchange (user "user", password "pencil").
RFC_PASSWORD = "pencil"
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_CLIENT_FIRST_BARE = f"n=user,r={RFC_CLIENT_NONCE}"
RFC_SERVER_FIRST = ("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
RFC_CLIENT_FINAL = ("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")

FAST = 64  # iterations for tests that are not about the key derivation itself


# -- an independent RFC 5802 implementation (hmac and hashlib only, no pbkdf2) ----------------


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def hi(password: bytes, salt: bytes, iterations: int) -> bytes:
    """RFC 5802 Hi(): U1 = HMAC(p, salt + INT(1)), Ui = HMAC(p, Ui-1), result = U1 ^ ... ^ Ui."""
    u = _hmac(password, salt + b"\x00\x00\x00\x01")
    out = int.from_bytes(u, "big")
    for _ in range(iterations - 1):
        u = _hmac(password, u)
        out ^= int.from_bytes(u, "big")
    return out.to_bytes(32, "big")


def keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes, bytes]:
    salted = hi(password.encode(), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return client_key, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# -- verifiers ----------------------------------------------------------------------------------


def test_verifier_known_answer_postgres_format() -> None:
    salt = b"wiregate-salt-16"
    _, stored, server = keys("pencil", salt, 4096)
    expected = f"SCRAM-SHA-256$4096:{b64(salt)}${b64(stored)}:{b64(server)}"
    assert make_verifier("pencil", 4096, salt=salt) == expected


def test_verifier_matches_rfc7677_exchange() -> None:
    """The verifier for the RFC's salt and password checks the RFC's proof and signature."""
    v = parse_verifier(make_verifier(RFC_PASSWORD, 4096, salt=RFC_SALT))
    without_proof, _, proof_b64 = RFC_CLIENT_FINAL.rpartition(",p=")
    auth = f"{RFC_CLIENT_FIRST_BARE},{RFC_SERVER_FIRST},{without_proof}".encode()
    client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof_b64),
                                             _hmac(v.stored_key, auth), strict=True))
    assert hashlib.sha256(client_key).digest() == v.stored_key
    assert _hmac(v.server_key, auth) == base64.b64decode(RFC_SERVER_FINAL[2:])
    # and the independent implementation agrees with the RFC too
    _, stored, server = keys(RFC_PASSWORD, RFC_SALT, 4096)
    assert (stored, server) == (v.stored_key, v.server_key)


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=30).filter(lambda s: s.isascii()),
       st.binary(min_size=1, max_size=32), st.integers(1, 50))
def test_verifier_round_trip(password: str, salt: bytes, iterations: int) -> None:
    text = make_verifier(password, iterations, salt=salt)
    v = parse_verifier(text)
    assert v.iterations == iterations and v.salt == salt
    _, stored, server = keys(password, salt, iterations)
    assert (v.stored_key, v.server_key) == (stored, server)


def test_verifier_random_salt_by_default() -> None:
    a, b = parse_verifier(make_verifier("x", FAST)), parse_verifier(make_verifier("x", FAST))
    assert len(a.salt) == 16 and a.salt != b.salt
    assert parse_verifier(make_verifier("x")).iterations == DEFAULT_ITERATIONS == 4096


GOOD = make_verifier("pw", 4096, salt=b"0123456789abcdef")
_, _SALT, _KEYS = GOOD.split("$")
_STORED, _SERVER = _KEYS.split(":")


@pytest.mark.parametrize("text", [
    "",
    "md5" + "0" * 32,
    "pw",
    GOOD.replace("SCRAM-SHA-256", "SCRAM-SHA-1"),
    GOOD.replace("$", "#"),
    GOOD + "$extra",
    GOOD.replace("4096:", "4096"),
    GOOD.replace("4096", "many"),
    GOOD.replace("4096", "0"),
    GOOD.replace("4096", "-1"),
    GOOD.replace(_SALT.split(":")[1], "not base64!"),
    GOOD.replace(_STORED, "AAAA"),                       # 3-byte StoredKey
    GOOD.replace(_SERVER, _SERVER[:-4]),                 # truncated ServerKey
    GOOD.replace(_STORED, _STORED[:-1]),                 # bad padding
    GOOD.replace(":" + _SERVER, ""),
])
def test_malformed_verifier_rejected_helpfully(text: str) -> None:
    with pytest.raises(ValueError, match="SCRAM-SHA-256") as exc:
        parse_verifier(text)
    assert type(exc.value) is ValueError
    assert "verifier" in str(exc.value)


def test_malformed_verifier_message_shows_expected_form() -> None:
    with pytest.raises(ValueError) as exc:
        parse_verifier("hunter2")
    assert "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" in str(exc.value)
    assert "wiregate passwd" in str(exc.value)


# -- client against server ----------------------------------------------------------------------


def exchange(client_password: str, verifier: str | None) -> tuple[ScramClient, ScramServer,
                                                                    bytes]:
    server = ScramServer(parse_verifier(verifier) if verifier else None)
    client = ScramClient(client_password)
    first = client.first()
    assert first.startswith(b"n,,n=,r=")
    server_first = server.first(first)
    client_final = client.final(server_first)
    return client, server, server.final(client_final)


def test_right_password_logs_in() -> None:
    client, server, server_final = exchange("secret", make_verifier("secret", FAST))
    assert server.done
    assert server_final.startswith(b"v=")
    client.verify(server_final)  # does not raise


@pytest.mark.parametrize("password", ["Secret", "secret ", "", "secre"])
def test_wrong_password_fails(password: str) -> None:
    with pytest.raises(ScramError, match="password authentication failed"):
        exchange(password, make_verifier("secret", FAST))


def test_non_ascii_password_logs_in() -> None:
    client, server, final = exchange("pässwörd\u00a0x", make_verifier("pässwörd\u00a0x", FAST))
    client.verify(final)
    assert server.done


@pytest.mark.parametrize("password", ["secret", "anything", ""])
def test_unknown_user_always_fails_at_the_proof(password: str) -> None:
    server = ScramServer(None)
    client = ScramClient(password)
    server_first = server.first(client.first())
    # the mock exchange looks like a real one up to the proof
    attrs = dict(p.split("=", 1) for p in server_first.decode().split(","))
    assert set(attrs) == {"r", "s", "i"} and attrs["i"] == "4096"
    assert len(base64.b64decode(attrs["s"])) == 16
    with pytest.raises(ScramError, match="password authentication failed"):
        server.final(client.final(server_first))
    assert not server.done


def test_unknown_user_fails_even_with_a_valid_proof_for_the_mock_keys(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a client holding the mock's own ClientKey is refused: the mock never succeeds."""
    client_key = b"k" * 32
    planted = iter([b"s" * 16, hashlib.sha256(client_key).digest(), b"v" * 32])
    real = scram.secrets.token_bytes
    monkeypatch.setattr(scram.secrets, "token_bytes",
                        lambda n=None: next(planted, None) or real(n))
    server = ScramServer(None)
    monkeypatch.setattr(scram.secrets, "token_bytes", real)
    server_first = server.first(b"n,,n=,r=abc").decode()
    nonce = server_first.split(",")[0][2:]
    without_proof = f"c=biws,r={nonce}"
    auth = f"n=,r=abc,{server_first},{without_proof}".encode()
    proof = bytes(a ^ b for a, b in zip(client_key, _hmac(hashlib.sha256(client_key).digest(),
                                                          auth), strict=True))
    with pytest.raises(ScramError, match="password authentication failed"):
        server.final(f"{without_proof},p={b64(proof)}".encode())
    assert not server.done


def _server_and_final(password: str = "secret") -> tuple[ScramServer, str]:
    server = ScramServer(parse_verifier(make_verifier("secret", FAST)))
    client = ScramClient(password)
    final = client.final(server.first(client.first())).decode()
    return server, final


def test_tampered_nonce_refused() -> None:
    server, final = _server_and_final()
    nonce = final.split(",")[1][2:]
    with pytest.raises(ScramError, match="nonce mismatch"):
        server.final(final.replace(nonce, nonce[:-1] + ("A" if nonce[-1] != "A" else "B"))
                      .encode())
    server, final = _server_and_final()
    with pytest.raises(ScramError, match="nonce mismatch"):
        server.final(final.replace(",r=", ",r=x").encode())


def test_missing_proof_refused() -> None:
    server, final = _server_and_final()
    without_proof = final.rpartition(",p=")[0]
    with pytest.raises(ScramError, match="proof missing"):
        server.final(without_proof.encode())


@pytest.mark.parametrize("proof", ["", "AAAA", "not base64!", b64(bytes(31)), b64(bytes(33))])
def test_malformed_proof_refused(proof: str) -> None:
    server, final = _server_and_final()
    with pytest.raises(ScramError):
        server.final((final.rpartition(",p=")[0] + ",p=" + proof).encode())
    assert not server.done


def test_flipped_proof_bit_refused() -> None:
    server, final = _server_and_final()
    head, _, proof = final.rpartition(",p=")
    raw = bytearray(base64.b64decode(proof))
    raw[0] ^= 1
    with pytest.raises(ScramError, match="password authentication failed"):
        server.final(f"{head},p={b64(bytes(raw))}".encode())


def test_channel_binding_data_must_be_gs2_header() -> None:
    server, final = _server_and_final()
    with pytest.raises(ScramError, match="channel binding"):
        server.final(final.replace("c=biws", "c=" + b64(b"p=tls-server-end-point,,")).encode())


@pytest.mark.parametrize("first, match", [
    (b"p=tls-server-end-point,,n=,r=abc", "channel binding is not supported"),
    (b"x,,n=,r=abc", "malformed"),
    (b"n,,n=", "nonce missing"),
    (b"n,,n=,r=", "nonce missing"),
    (b"n,", "malformed"),
    (b"n,,n=,r=abc,garbage", "malformed SCRAM attribute"),
    (b"n,,\xff\xfe", "not UTF-8"),
])
def test_bad_client_first_refused(first: bytes, match: str) -> None:
    server = ScramServer(parse_verifier(make_verifier("secret", FAST)))
    with pytest.raises(ScramError, match=match):
        server.first(first)


def test_client_final_not_utf8_refused() -> None:
    server, _ = _server_and_final()
    with pytest.raises(ScramError, match="not UTF-8"):
        server.final(b"c=biws,r=\xff,p=AAAA")


def test_y_gs2_header_accepted() -> None:
    """'y' means the client supports channel binding but thinks the server does not."""
    v = parse_verifier(make_verifier("secret", FAST))
    server = ScramServer(v)
    cnonce = "fyko+d2lbbFgONRv9qkxdawL"
    server_first = server.first(f"y,,n=,r={cnonce}".encode()).decode()
    nonce = server_first.split(",")[0][2:]
    assert nonce.startswith(cnonce) and len(nonce) > len(cnonce)
    salt = base64.b64decode(server_first.split(",")[1][2:])
    client_key, stored, server_key = keys("secret", salt, FAST)
    without_proof = f"c={b64(b'y,,')},r={nonce}"
    auth = f"n=,r={cnonce},{server_first},{without_proof}".encode()
    proof = bytes(a ^ b for a, b in zip(client_key, _hmac(stored, auth), strict=True))
    final = server.final(f"{without_proof},p={b64(proof)}".encode())
    assert final == b"v=" + base64.b64encode(_hmac(server_key, auth))


def test_server_signature_verified_by_client() -> None:
    client, _, final = exchange("secret", make_verifier("secret", FAST))
    sig = bytearray(base64.b64decode(final[2:]))
    sig[-1] ^= 0x80
    with pytest.raises(ScramError, match="signature does not verify"):
        client.verify(b"v=" + base64.b64encode(bytes(sig)))
    with pytest.raises(ScramError):
        client.verify(b"v=")
    with pytest.raises(ScramError, match="upstream rejected SCRAM: invalid-proof"):
        client.verify(b"e=invalid-proof")
    client.verify(final)  # the real one still does


@pytest.mark.parametrize("server_final", [b"v=not base64!", b"v=AAA", b"garbage", b""])
def test_malformed_server_final_is_scram_error(server_final: bytes) -> None:
    client, _, _ = exchange("secret", make_verifier("secret", FAST))
    with pytest.raises(ScramError):
        client.verify(server_final)


def test_client_known_answer_rfc7677() -> None:
    client = ScramClient(RFC_PASSWORD)
    # RFC 7677 sends the user name; Wiregate sends "n=" (PostgreSQL takes it from startup),
    # so pin the RFC's client-first-message to reproduce the published exchange.
    client._cnonce = RFC_CLIENT_NONCE
    client._client_first_bare = RFC_CLIENT_FIRST_BARE
    assert client.final(RFC_SERVER_FIRST.encode()) == RFC_CLIENT_FINAL.encode()
    client.verify(RFC_SERVER_FINAL.encode())


def test_client_independent_computation() -> None:
    client = ScramClient("secret")
    first = client.first().decode()
    cnonce = first.split("r=", 1)[1]
    salt = b"independent-salt"
    server_first = f"r={cnonce}SERVERPART,s={b64(salt)},i={FAST}"
    final = client.final(server_first.encode()).decode()
    without_proof, _, proof = final.rpartition(",p=")
    assert without_proof == f"c=biws,r={cnonce}SERVERPART"
    client_key, stored, server_key = keys("secret", salt, FAST)
    auth = f"{first[3:]},{server_first},{without_proof}".encode()
    assert base64.b64decode(proof) == bytes(
        a ^ b for a, b in zip(client_key, _hmac(stored, auth), strict=True))
    client.verify(b"v=" + base64.b64encode(_hmac(server_key, auth)))


@pytest.mark.parametrize("server_first", [
    "r=someoneelse,s=c2FsdA==,i=4096",          # nonce not extending ours
    "r={n}x,s=,i=4096",                         # no salt
    "r={n}x,s=c2FsdA==,i=",                     # no iterations
    "r={n}x,s=c2FsdA==,i=abc",
    "r={n}x,s=c2FsdA==,i=-1",
    "r={n}x,s=c2FsdA==,i=0",                    # zero iterations
    "r={n}x,s=c2FsdA==,i=\u00b2",               # a digit that int() refuses
    "r={n}x,s=not base64!,i=4096",              # salt not base64
    "r={n}x,s=c2Fsd,i=4096",                    # salt with bad padding
    "garbage",
])
def test_malformed_server_first_is_scram_error(server_first: str) -> None:
    client = ScramClient("secret")
    cnonce = client.first().decode().split("r=", 1)[1]
    with pytest.raises(ScramError):
        client.final(server_first.replace("{n}", cnonce).encode())


def test_client_nonces_are_fresh() -> None:
    assert ScramClient("a").first() != ScramClient("a").first()


def test_mechanism_name() -> None:
    assert MECHANISM == "SCRAM-SHA-256"


# -- MD5 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("user, password, salt", [
    ("postgres", "secret", b"\x01\x02\x03\x04"),
    ("alice", "", b"\x00\x00\x00\x00"),
    ("bob", "p\u00e4ss", b"\xff\xfe\xfd\xfc"),
])
def test_md5_password_formula(user: str, password: str, salt: bytes) -> None:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    outer = hashlib.md5(inner.encode() + salt).hexdigest()
    got = md5_password(user, password, salt)
    assert got == b"md5" + outer.encode()
    assert len(got) == 35



def test_unknown_user_mock_salt_is_stable_per_name() -> None:
    """Two attempts for the same unknown name see the same salt, as for a real user."""

    def salt_for(user: str) -> str:
        server = ScramServer(None, user)
        first = server.first(b"n,,n=,r=abcdefgh").decode()
        return dict(p.split("=", 1) for p in first.split(","))["s"]

    assert salt_for("nobody") == salt_for("nobody")
    assert salt_for("nobody") != salt_for("someone-else")


def test_channel_binding_header_must_match_client_first() -> None:
    """A client that said "y,," must send c=eSws; "n,," must send c=biws (RFC 5802)."""
    verifier = parse_verifier(make_verifier("pw", iterations=4096))
    for header, other in (("y,,", "biws"), ("n,,", "eSws")):
        server = ScramServer(verifier)
        client = ScramClient("pw")
        first = client.first().decode().replace("n,,", header, 1)
        server_first = server.first(first.encode())
        final = client.final(server_first).decode()
        final = final.replace("c=biws", "c=" + other, 1)
        with pytest.raises(ScramError, match="channel binding"):
            server.final(final.encode())
