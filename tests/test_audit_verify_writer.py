"""The reference writer of the audit trail (``cellgate.reference.audit_trail``) writes the bytes
FORMAT.md describes: a golden trail (for the Rust writer to match byte for byte), the key order,
rotation, digests, clean shutdown and restart, the lock and retention."""

from __future__ import annotations

import base64
import hashlib
import itertools
from pathlib import Path

import orjson
import pytest
from cellgate.audit.verify import verify_trail
from cellgate.reference.audit_trail import (
    ADMIN_KEYS,
    REQUEST_KEYS,
    ZERO_HASH,
    ChainWriter,
    SteppingClock,
    format_time,
    key_id,
    public_key_pem,
    segment_name,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

T0 = 1_796_160_000_000_000  # 2026-12-01T21:20:00Z
HOUR = 3_600_000_000
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))

GOLDEN_SEGMENT_1 = b"""\
{"v":1,"chain":0,"seq":1,"time":"2026-12-01T21:22:55.123456Z","prev":"0000000000000000000000000000000000000000000000000000000000000000","event":"request","request_id":"r-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","customer":"c-1001","method":"POST","path":"/api/transfers","client":"hmac-sha256:abababababababababababababababababababababababababababababababab","user_agent":null,"tier":"standard","region":"us-east","risk":{"score":0.35,"level":"LOW","factors":["unusual_hours"]},"step_up":null,"cells":[["retail-us-east-1",null],["retail-us-east-2","breaker_open"]],"cell":"retail-us-east-1","encryption":"standard","retries":0,"cell_status":201,"status":201,"latency_us":1834,"outcome":"forwarded","reason":null}
{"v":1,"chain":0,"seq":2,"time":"2026-12-01T21:22:55.200001Z","prev":"8722ddef88ae0da10969009126c5264de7634b4d332fecd7d9db4c8287bbea04","event":"admin","admin":"ops-1","action":"revoke_customer","target":{"customer":"c-1001"},"status":200,"outcome":"applied","reason":null}
"""

GOLDEN_SEGMENT_3 = b"""\
{"v":1,"chain":0,"seq":3,"time":"2026-12-01T22:20:00.000000Z","prev":"650afc87e595ee6beb3887d77b5a7ae406a1e665da2bdefef623f5f8a38a5696","event":"request","request_id":"r-2","trace_id":null,"customer":null,"method":"GET","path":null,"client":null,"user_agent":null,"tier":null,"region":null,"risk":null,"step_up":null,"cells":[],"cell":null,"encryption":null,"retries":0,"cell_status":null,"status":400,"latency_us":12,"outcome":"refused","reason":"bad_path"}
"""

GOLDEN_DIGESTS = b"""\
{"v":1,"chain":0,"digest":1,"kind":"records","time":"2026-12-01T21:20:01.000000Z","prev_digest":"0000000000000000000000000000000000000000000000000000000000000000","segment":"000000000001-20261201T21.jsonl","first_seq":1,"last_seq":2,"count":2,"first_time":"2026-12-01T21:22:55.123456Z","last_time":"2026-12-01T21:22:55.200001Z","last_hash":"650afc87e595ee6beb3887d77b5a7ae406a1e665da2bdefef623f5f8a38a5696","segment_bytes":995,"segment_sha256":"5f16ff0063b88ca5438b8bd6dad52cfd6be453190f1639c5bafed81863ea259b","final":false,"lost":0,"gap":null,"key_id":"56475aa75463474c","signature":"CihXhZlktk8kHEcu3OOgEmXwc77+6UoDq3/tvpku+IPoclQKgGRNNJBCDgGeFkQlulXxNU0J/6u3LDLEZCKxBg=="}
{"v":1,"chain":0,"digest":2,"kind":"records","time":"2026-12-01T21:20:02.000000Z","prev_digest":"a206f48a1f91cf92e9009c54ed0fa19a4930a42f8e701ce80a910d8ae75a4913","segment":"000000000001-20261201T21.jsonl","first_seq":null,"last_seq":null,"count":0,"first_time":null,"last_time":null,"last_hash":null,"segment_bytes":995,"segment_sha256":"5f16ff0063b88ca5438b8bd6dad52cfd6be453190f1639c5bafed81863ea259b","final":true,"lost":0,"gap":null,"key_id":"56475aa75463474c","signature":"i/gGD9xmOcv4mbTbgy7/5WYUZglIy7be5RfJDEeFSevKP99rKmj+bCjs9GmFE7otV6JDgXERk4oQqlXhSuWpDQ=="}
{"v":1,"chain":0,"digest":3,"kind":"records","time":"2026-12-01T21:20:03.000000Z","prev_digest":"c8b369a111cde0fc25aae9275ab736cd35a2d56c999126eba733687ed4bcf8bf","segment":"000000000003-20261201T22.jsonl","first_seq":3,"last_seq":3,"count":1,"first_time":"2026-12-01T22:20:00.000000Z","last_time":"2026-12-01T22:20:00.000000Z","last_hash":"979ad1abac239200920f4d60bcd1e0e3d344dcb8c6115b0ff8b69ce115dd86bd","segment_bytes":459,"segment_sha256":"745dafa74b21c80a9a9f61efef0be1a4de0e53c2a30508e1d46fdd837111f25b","final":true,"lost":0,"gap":null,"key_id":"56475aa75463474c","signature":"Ol1Vxgsq33Gij42Tz/GgMCfQAvqDQnPAs+thEKrI2n+TR4ixm2FlaR1mTC3nUvM60cOVlVwGDgdCAFVDoAgECA=="}
"""


def request_fields(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {key: None for key in REQUEST_KEYS}
    fields.update(request_id="r-x", method="GET", cells=[], retries=0, status=200)
    fields.update(latency_us=5, outcome="forwarded")
    fields.update(overrides)
    return fields


def lines_of(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_golden_trail(tmp_path: Path) -> None:
    """Fixed key, records stamped at fixed times, digests timed by a clock that reads T0 at
    opening and one second more at each digest: the exact bytes, for the Rust writer to match."""
    writer = ChainWriter(
        tmp_path, 0, KEY, SteppingClock(T0, 1_000_000), digest_every_records=2, digest_every_s=None
    )
    writer.request(
        T0 + 175_123_456,
        request_id="r-1",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        customer="c-1001",
        method="POST",
        path="/api/transfers",
        client="hmac-sha256:" + "ab" * 32,
        user_agent=None,
        tier="standard",
        region="us-east",
        # Out of order on purpose: the writer lays the risk out as score, level, factors.
        risk={"level": "LOW", "factors": ["unusual_hours"], "score": 0.35},
        step_up=None,
        cells=[["retail-us-east-1", None], ["retail-us-east-2", "breaker_open"]],
        cell="retail-us-east-1",
        encryption="standard",
        retries=0,
        cell_status=201,
        status=201,
        latency_us=1834,
        outcome="forwarded",
        reason=None,
    )
    writer.admin(
        T0 + 175_200_001,
        admin="ops-1",
        action="revoke_customer",
        target={"customer": "c-1001"},
        status=200,
        outcome="applied",
        reason=None,
    )
    refused = request_fields(request_id="r-2", status=400, latency_us=12, outcome="refused")
    writer.request(T0 + HOUR, **refused | {"reason": "bad_path"})
    writer.close()
    chain = tmp_path / "chain-0"
    assert (chain / "000000000001-20261201T21.jsonl").read_bytes() == GOLDEN_SEGMENT_1
    assert (chain / "000000000003-20261201T22.jsonl").read_bytes() == GOLDEN_SEGMENT_3
    assert (chain / "digests.jsonl").read_bytes() == GOLDEN_DIGESTS
    assert (tmp_path / "audit-key.pub").read_bytes() == public_key_pem(KEY.public_key())
    assert verify_trail(tmp_path, KEY.public_key()).ok


def test_record_layout_follows_the_format(tmp_path: Path) -> None:
    clock = SteppingClock(T0, 1_000)
    with ChainWriter(tmp_path, 3, KEY, clock) as writer:
        first = writer.request(**request_fields(), later_key="added at the end")
        second = writer.admin(
            admin="ops", action="revoke_token", target={"jti": "j1"}, status=200,
            outcome="forwarded", reason=None,
        )  # fmt: skip
    one, two = orjson.loads(first), orjson.loads(second)
    head = ["v", "chain", "seq", "time", "prev", "event"]
    assert list(one) == [*head, *REQUEST_KEYS, "later_key"]
    assert list(two) == [*head, *ADMIN_KEYS]
    assert (one["v"], one["chain"], one["seq"], one["prev"]) == (1, 3, 1, ZERO_HASH)
    assert two["prev"] == hashlib.sha256(first).hexdigest()
    assert b", " not in first and b": " not in first  # compact
    writer = ChainWriter(tmp_path, 4, KEY, clock)
    with pytest.raises(ValueError, match="needs"):
        writer.request(request_id="r")
    writer.close()


def test_time_and_segment_names() -> None:
    assert format_time(T0 + 123_456) == "2026-12-01T21:20:00.123456Z"
    assert format_time(0) == "1970-01-01T00:00:00.000000Z"
    assert segment_name(4711, T0 + HOUR) == "000000004711-20261201T22.jsonl"


def test_rotation_by_size_and_hour_closes_segments_with_final_digests(tmp_path: Path) -> None:
    clock = SteppingClock(T0, 1_000_000)
    writer = ChainWriter(tmp_path, 0, KEY, clock, rotate_bytes=2_000, digest_every_records=1000)
    lines = [writer.request(**request_fields(request_id=f"r-{i}")) for i in range(10)]
    clock.advance(HOUR)
    lines.append(writer.request(**request_fields(request_id="r-late")))
    writer.close()
    chain = tmp_path / "chain-0"
    segments = sorted(p for p in chain.glob("0*.jsonl"))
    for path in segments[:-1]:  # each ends with the record that took it to 2,000 bytes or past
        data = path.read_bytes()
        assert len(data) >= 2_000 > len(data) - len(data.splitlines()[-1]) - 1
    assert segments[-1].name.endswith("T22.jsonl")
    assert b"".join(p.read_bytes() for p in segments) == b"".join(x + b"\n" for x in lines)
    digests = lines_of(chain / "digests.jsonl")
    assert [d["segment"] for d in digests] == [p.name for p in segments]
    assert all(d["final"] for d in digests)
    assert sum(d["count"] for d in digests) == 11
    for digest, path in zip(digests, segments, strict=True):
        data = path.read_bytes()
        assert digest["segment_bytes"] == len(data)
        assert digest["segment_sha256"] == hashlib.sha256(data).hexdigest()
        assert digest["last_hash"] == hashlib.sha256(data.splitlines()[-1]).hexdigest()
        assert digest["first_seq"] == int(path.name[:12])


def test_digests_every_n_records_and_every_s(tmp_path: Path) -> None:
    clock = SteppingClock(T0, 1_000)
    writer = ChainWriter(tmp_path, 0, KEY, clock, digest_every_records=4, digest_every_s=10)
    for i in range(9):
        writer.request(**request_fields(request_id=f"r-{i}"))
    assert writer.tick() is None  # 10 s have not passed
    clock.advance(10_000_000)
    line = writer.tick()
    assert line is not None and orjson.loads(line)["first_seq"] == 9
    writer.close()
    digests = lines_of(tmp_path / "chain-0" / "digests.jsonl")
    assert [(d["first_seq"], d["last_seq"], d["final"]) for d in digests] == [
        (1, 4, False),
        (5, 8, False),
        (9, 9, False),
        (None, None, True),
    ]
    assert [d["digest"] for d in digests] == [1, 2, 3, 4]
    for before, after in itertools.pairwise(digests):
        assert after["prev_digest"] != before["prev_digest"]


def test_signature_covers_the_line_up_to_the_signature(tmp_path: Path) -> None:
    with ChainWriter(tmp_path, 0, KEY, SteppingClock(T0)) as writer:
        writer.request(**request_fields())
    line = (tmp_path / "chain-0" / "digests.jsonl").read_bytes().splitlines()[0]
    entry = orjson.loads(line)
    assert list(entry)[-2:] == ["key_id", "signature"]
    assert entry["key_id"] == key_id(KEY.public_key())
    signed = line[: line.rindex(b',"signature":"')] + b"}"
    KEY.public_key().verify(base64.b64decode(entry["signature"]), signed)


def test_restart_after_clean_close_opens_a_new_segment_without_recovery(tmp_path: Path) -> None:
    clock = SteppingClock(T0)
    with ChainWriter(tmp_path, 0, KEY, clock) as writer:
        writer.request(**request_fields())
    with ChainWriter(tmp_path, 0, KEY, clock) as writer:
        assert writer.gap is None
        line = writer.request(**request_fields())
    assert orjson.loads(line)["seq"] == 2
    names = sorted(p.name for p in (tmp_path / "chain-0").glob("0*.jsonl"))
    assert names == ["000000000001-20261201T21.jsonl", "000000000002-20261201T21.jsonl"]
    assert not any(d["gap"] for d in lines_of(tmp_path / "chain-0" / "digests.jsonl"))
    assert verify_trail(tmp_path, KEY.public_key()).ok


def test_a_chain_has_one_writer_at_a_time(tmp_path: Path) -> None:
    writer = ChainWriter(tmp_path, 0, KEY, SteppingClock(T0))
    with pytest.raises(BlockingIOError):
        ChainWriter(tmp_path, 0, KEY, SteppingClock(T0))
    writer.crash()
    ChainWriter(tmp_path, 0, KEY, SteppingClock(T0)).close()


def test_another_key_is_refused_for_the_same_trail(tmp_path: Path) -> None:
    ChainWriter(tmp_path, 0, KEY, SteppingClock(T0)).close()
    with pytest.raises(ValueError, match="another public key"):
        ChainWriter(tmp_path, 1, Ed25519PrivateKey.generate(), SteppingClock(T0))


def test_retention_removes_only_closed_segments_and_says_so_first(tmp_path: Path) -> None:
    clock = SteppingClock(T0)
    writer = ChainWriter(tmp_path, 0, KEY, clock, rotate_bytes=1_000)
    for i in range(12):
        writer.request(**request_fields(request_id=f"r-{i}"))
    names = sorted(p.name for p in (tmp_path / "chain-0").glob("0*.jsonl"))
    with pytest.raises(ValueError, match="not a closed segment"):
        writer.remove_segments([names[-1]])
    entry = orjson.loads(writer.remove_segments(names[1::-1]))
    assert entry["kind"] == "retention" and entry["removed"] == names[:2]
    assert list(entry)[:6] == ["v", "chain", "digest", "kind", "time", "prev_digest"]
    writer.close()
    assert not (tmp_path / "chain-0" / names[0]).exists()
    assert verify_trail(tmp_path, KEY.public_key()).ok
