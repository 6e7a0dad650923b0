from depth_core.raw_format import RawObjectKey


def test_raw_key_round_trip() -> None:
    key = RawObjectKey.for_segment("spot", "eu-1", "BTCUSDT", 1_764_000_000_123_456_789, "ab12", 3)
    assert RawObjectKey.parse(key.key) == key
