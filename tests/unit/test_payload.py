"""Job arguments pickled as pieces: the same bytes as cloudpickle.dumps, the caller's
large bytes objects held (not copied), anything mutable copied (a snapshot)."""

import cloudpickle

from dispylike.persistence.journal import KEEP_ARGS_MAX
from dispylike.protocol.payload import SPLIT_MIN, SplitPayload, dumps_payload, payload_bytes


def test_a_small_pickle_is_plain_bytes_as_cloudpickle_makes_them():
    args = ((1, 'two', [3.0]), {'k': b'v' * 1000})
    payload = dumps_payload(args, cloudpickle.Pickler)
    assert type(payload) is bytes
    assert payload == cloudpickle.dumps(args, protocol=5)


def test_a_large_pickle_keeps_the_callers_bytes_and_joins_to_the_same_pickle():
    big = b'x' * (SPLIT_MIN + 10)
    args = ((big, 7), {})
    payload = dumps_payload(args, cloudpickle.Pickler)
    assert type(payload) is SplitPayload
    assert any(part is big for part in payload.parts)          # not copied
    assert len(payload) == sum(map(len, payload.parts))
    assert payload_bytes(payload) == cloudpickle.dumps(args, protocol=5)
    assert cloudpickle.loads(payload_bytes(payload)) == args


def test_a_large_mutable_argument_is_copied_when_submitted():
    buf = bytearray(b'a' * (SPLIT_MIN + 10))
    payload = dumps_payload(((buf,), {}), cloudpickle.Pickler)
    buf[:5] = b'ZZZZZ'                                          # the program changes it
    (arg,), _ = cloudpickle.loads(payload_bytes(payload))
    assert arg[:5] == b'aaaaa'


def test_split_payloads_are_over_what_the_recover_file_keeps():
    # journaling records a SplitPayload's arguments as not kept, as for any over the limit
    assert SPLIT_MIN >= KEEP_ARGS_MAX
