"""`BatchMemo`: inside a scope, a value is reused only for the same tensor objects, unmodified;
nothing is reused outside one, or after it."""

from __future__ import annotations

import gc
import threading
import weakref

import torch

from kernels.hstu_attention.batch_memo import BatchMemo


def _summing(memo: BatchMemo, tensors, params=()):
    return memo.get(tensors, params, lambda: sum(int(t.sum()) for t in tensors if t is not None))


def test_inside_a_scope_the_same_tensors_share_one_computation_and_others_get_their_own():
    memo: BatchMemo[int] = BatchMemo()
    ts, offsets = torch.arange(5), torch.tensor([0, 2, 5])
    with memo.scope():
        assert _summing(memo, (ts, None, offsets)) == 17
        assert _summing(memo, (ts, None, offsets)) == 17
        assert memo.computed == 1
        # Equal values in another tensor: computed again (identity, not contents, is the key).
        assert _summing(memo, (ts.clone(), None, offsets)) == 17
        assert memo.computed == 2
        # An absent tensor where there was one, other params: computed again.
        assert _summing(memo, (ts, offsets, offsets)) == 24
        assert _summing(memo, (ts, offsets, offsets), params=(7,)) == 24
        assert memo.computed == 4


def test_outside_a_scope_and_after_it_everything_is_computed():
    memo: BatchMemo[int] = BatchMemo()
    ts = torch.arange(5)
    assert _summing(memo, (ts,)) == 10
    assert _summing(memo, (ts,)) == 10
    assert memo.computed == 2
    with memo.scope():
        _summing(memo, (ts,))
        with memo.scope():  # nested: still the same scope's value
            _summing(memo, (ts,))
        _summing(memo, (ts,))
    assert memo.computed == 3
    # The scope's value is gone with it: a write the version counter misses (a data loader
    # refilling a numpy buffer behind the tensor) cannot be answered from it afterwards.
    ts.numpy()[:] = 1
    assert _summing(memo, (ts,)) == 5
    with memo.scope():
        assert _summing(memo, (ts,)) == 5
    assert memo.computed == 5


def test_an_in_place_write_invalidates_the_value():
    memo: BatchMemo[int] = BatchMemo()
    ts = torch.arange(5)
    with memo.scope():
        assert _summing(memo, (ts,)) == 10
        ts.add_(1)
        assert _summing(memo, (ts,)) == 15
        ts[0] = 100
        assert _summing(memo, (ts,)) == 114
        with torch.no_grad():
            ts.zero_()
        assert _summing(memo, (ts,)) == 0
    assert memo.computed == 4


def test_a_new_tensor_in_a_freed_ones_memory_is_not_taken_for_it():
    memo: BatchMemo[int] = BatchMemo()
    with memo.scope():
        first = torch.arange(5)
        first.add_(0)  # version 1, as the tensor below will have
        storage, address = first.untyped_storage(), first.data_ptr()
        assert _summing(memo, (first,)) == 10
        del first
        gc.collect()
        # Same memory, same version counter value, other values (written past the version
        # counter): a memo keyed by address and version would answer 10.
        second = torch.empty(0, dtype=torch.int64).set_(storage, 0, (5,))
        second.numpy()[:] = 7
        assert (second.data_ptr(), second._version) == (address, 1)
        assert _summing(memo, (second,)) == 35
        # A view of a live tensor: the same memory and version counter, another object.
        assert _summing(memo, (second.view(5),)) == 35
    assert memo.computed == 3


def test_inference_tensors_are_computed_every_time_and_keep_nothing():
    memo: BatchMemo[int] = BatchMemo()
    kept = torch.arange(3)
    with memo.scope():
        with torch.inference_mode():
            ts = torch.arange(4)
            assert _summing(memo, (ts,)) == 6
            assert _summing(memo, (ts,)) == 6
        assert memo.computed == 2
        assert _summing(memo, (kept,)) == 3
        with torch.inference_mode():
            _summing(memo, (torch.arange(4),))
        # The last memoizable value stays what it was.
        assert _summing(memo, (kept,)) == 3
    assert memo.computed == 4


def test_an_open_scope_serves_every_thread_and_the_memo_keeps_neither_keys_nor_values_alive():
    memo: BatchMemo[int] = BatchMemo()
    ts = torch.arange(3)
    seen_elsewhere = []

    def backward_thread():  # autograd runs a CUDA backward on a thread of its own
        seen_elsewhere.append(_summing(memo, (ts,)))

    with memo.scope():
        _summing(memo, (ts,))
        worker = threading.Thread(target=backward_thread)
        worker.start()
        worker.join()
        assert seen_elsewhere == [3] and memo.computed == 1
        # An inner scope closing (the model's own, inside the trainer's) keeps the value.
        with memo.scope():
            pass
        assert _summing(memo, (ts,)) == 3 and memo.computed == 1
        ref = weakref.ref(ts)
        del ts
        gc.collect()
        assert ref() is None
    assert memo._value is None and memo._stamps is None
