"""The sans-I/O core: bytes in, messages or errors out."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from export.dream import Dream
from export.manifest import Manifest
from serve.protocol import (
    FRAME_HEADER_BYTES,
    Input,
    ProtocolError,
    decode_binary,
    decode_frame,
    encode_frame,
    encode_input,
    parse_hello,
    parse_text,
)
from serve.session import Session, encode_payload


def test_input_round_trip_is_24_bytes_for_four_sticks() -> None:
    data = encode_input(7, [0.5, -1.0, 0.0, 1.0])
    assert len(data) == 24
    decoded = decode_binary(data, 4)
    assert isinstance(decoded, Input)
    assert decoded.seq == 7
    np.testing.assert_array_equal(decoded.controls, [0.5, -1.0, 0.0, 1.0])


@pytest.mark.parametrize(("data", "match"), [
    (b"", "shorter than"),
    (encode_input(1, [0, 0, 0]), "must be 24 bytes"),
    (encode_input(1, [0, 0, 0, 0, 0]), "must be 24 bytes"),
    (encode_input(1, [np.nan, 0, 0, 0]), "finite"),
    (encode_input(1, [np.inf, 0, 0, 0]), "finite"),
    (encode_input(1, [1e30, 0, 0, 0]), r"in \[-1, 1\]"),
    (bytes([2, 1, 0, 0, 0, 0, 0, 0]) + bytes(16), "version 2"),
    (bytes([1, 9, 0, 0, 0, 0, 0, 0]), "unknown binary message type 9"),
])
def test_bad_inputs_are_refused_with_a_reason(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as err:
        decode_binary(data, 4)
    assert err.value.code == "BAD_INPUT"
    assert not err.value.fatal


def test_frame_header_layout() -> None:
    msg = encode_frame(3, 9, 64, 48, "png", 12.7, b"abc", reset=True)
    assert FRAME_HEADER_BYTES == 20
    assert struct.unpack_from("<BBHIIHHBBH", msg) == (1, 0x81, 1, 3, 9, 64, 48, 2, 0, 12)
    frame = decode_frame(msg)
    assert (frame.reset, frame.encoding, frame.payload) == (True, "png", b"abc")


def test_hello_defaults_and_refusals() -> None:
    hello = parse_hello('{"type": "hello", "protocol": 1}')
    assert (hello.mode, hello.encoding, hello.fps) == ("realtime", "jpeg", None)
    hello = parse_hello('{"type":"hello","protocol":1,"mode":"lockstep","encoding":"raw",'
                        '"quality":50,"fps":30,"seed":4,"token":"t"}')
    assert (hello.mode, hello.quality, hello.fps, hello.seed, hello.token) == (
        "lockstep", 50, 30.0, 4, "t")
    for bad in ('{"type":"hello","protocol":2}', '{"type":"hello"}', "[1]", "{",
                '{"type":"hello","protocol":1,"fps":0}',
                '{"type":"hello","protocol":1,"encoding":"gif"}',
                '{"type":"hello","protocol":1,"quality":101}'):
        with pytest.raises(ProtocolError) as err:
            parse_hello(bad)
        assert err.value.code == "BAD_HELLO"


def test_text_messages() -> None:
    assert parse_text('{"type":"reset","seed":3}') == {"type": "reset", "seed": 3}
    assert parse_text('{"type":"ping","t":1.5}') == {"type": "ping", "t": 1.5}
    assert parse_text('{"type":"config","fps":60}') == {"type": "config", "fps": 60.0}
    with pytest.raises(ProtocolError, match="unknown message type"):
        parse_text('{"type":"teleport"}')


def test_session_context_outbox_and_resets() -> None:
    start = np.random.default_rng(0).integers(0, 255, (3, 2, 3, 8, 8), dtype=np.uint8)
    manifest = Manifest(model={}, height=8, width=8, context_frames=2, control_dim=4)
    session = Session(start, parse_hello('{"type":"hello","protocol":1,"seed":1}'), 10.0,
                      Dream(manifest))
    np.testing.assert_allclose(session.context, start[1] / 255.0)
    session.apply(np.ones((3, 8, 8), np.float32))
    assert session.frame_index == 1
    np.testing.assert_array_equal(session.context[-1], 1.0)
    session.post(b"a")
    session.post(b"b")
    assert session.dropped == 1
    assert session.take() == b"b"
    assert session.take() is None
    assert len(encode_payload(session.context[-1], "raw", 90)) == 8 * 8 * 3
