"""The embedder's forward-pass thread: one thread runs every model call, waiting requests share a pass."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from memstore.storage.embed import ForwardPasses, SentenceTransformerEmbedder


class FakeModel:
    """Records which thread ran each encode and how many texts it got; optionally slow or failing."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[tuple[int, int]] = []  # (thread id, number of texts)
        self.delay, self.fail_on = delay, fail_on

    def encode(self, texts: list[str], **_kw: object) -> np.ndarray:
        self.calls.append((threading.get_ident(), len(texts)))
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError("model blew up")
        time.sleep(self.delay)
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)


def test_every_call_runs_on_one_thread_whoever_calls() -> None:
    passes, model = ForwardPasses(), FakeModel()
    results: dict[str, np.ndarray] = {}

    def call(name: str) -> None:
        results[name] = passes.encode("m", lambda: model, [name, name * 2])

    threads = [threading.Thread(target=call, args=(f"t{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    call("main")
    for t in threads:
        t.join()
    assert len({tid for tid, _n in model.calls}) == 1
    assert threading.get_ident() not in {tid for tid, _n in model.calls}
    for name, vecs in results.items():  # each caller gets its own rows, in order
        assert vecs[:, 0].tolist() == [len(name), 2 * len(name)]
    assert passes.call(lambda: threading.get_ident()) == model.calls[0][0]


def test_requests_waiting_meanwhile_share_one_forward_pass() -> None:
    passes, model = ForwardPasses(max_batch=64), FakeModel(delay=0.2)
    out: list[np.ndarray] = []
    first = threading.Thread(target=lambda: out.append(passes.encode("m", lambda: model, ["first"])))
    first.start()
    time.sleep(0.05)  # the first pass is running; these eight queue up behind it
    waiting = [threading.Thread(target=lambda i=i: out.append(passes.encode("m", lambda: model, [f"q{i}"])))
               for i in range(8)]
    for t in waiting:
        t.start()
    for t in [first, *waiting]:
        t.join()
    assert [n for _tid, n in model.calls] == [1, 8]
    assert sorted(v[0, 0] for v in out) == [2.0] * 8 + [5.0]


def test_models_are_not_mixed_and_errors_reach_every_waiting_caller() -> None:
    passes = ForwardPasses()
    slow, other, bad = FakeModel(delay=0.2), FakeModel(), FakeModel(fail_on="boom")
    errors: list[BaseException] = []

    def run(key: str, model: FakeModel, texts: list[str]) -> None:
        try:
            passes.encode(key, lambda: model, texts)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=("slow", slow, ["a"]))]
    threads[0].start()
    time.sleep(0.05)
    threads += [threading.Thread(target=run, args=("other", other, ["b"])),
                threading.Thread(target=run, args=("bad", bad, ["boom"])),
                threading.Thread(target=run, args=("bad", bad, ["fine"]))]
    for t in threads[1:]:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert other.calls and all(n == 1 for _t, n in other.calls)  # never batched with another model's texts
    assert len(errors) == 1 and "blew up" in str(errors[0])  # only the caller whose text broke the pass fails
    assert [n for _t, n in bad.calls] == [2, 1, 1]  # shared pass failed, then each alone
    assert passes.encode("other", lambda: other, ["still works"]).shape == (1, 2)


def test_a_call_from_the_forward_thread_itself_runs_inline() -> None:
    passes, model = ForwardPasses(), FakeModel()
    nested = passes.call(lambda: passes.encode("m", lambda: model, ["inner"]))
    assert nested[0, 0] == 5.0


@pytest.mark.slow
def test_the_bundled_model_embeds_from_any_thread_alike() -> None:
    emb = SentenceTransformerEmbedder(cache_size=1)
    here = emb.embed(["I play the cello", "I grow tomatoes"])
    there: list[np.ndarray] = []
    t = threading.Thread(target=lambda: there.append(emb.embed(["I play the cello", "I grow tomatoes"])))
    t.start()
    t.join()
    assert here.shape == (2, emb.dim) and np.allclose(here, there[0], atol=1e-6)
    assert np.allclose(np.linalg.norm(here, axis=1), 1.0, atol=1e-5)


class FakeModelEmbedder(SentenceTransformerEmbedder):
    """The embedder's caching and threading around a FakeModel instead of a real one."""

    def __init__(self, model: FakeModel) -> None:
        super().__init__(backend="torch")
        self._key = ("fake", str(id(model)), "")
        self.fake = model

    def _load(self) -> FakeModel:
        return self.fake


def test_embed_soon_runs_alongside_the_caller_shares_work_in_flight_and_caches() -> None:
    model = FakeModel(delay=0.2)
    emb = FakeModelEmbedder(model)
    t0 = time.perf_counter()
    first = emb.embed_soon("what did I say about tomatoes?")
    again = emb.embed_soon("what did I say about tomatoes?")  # asked again before it is done
    assert time.perf_counter() - t0 < 0.15 and not first.done()  # the caller went on meanwhile
    assert again is first
    assert first.result(timeout=5).tolist() == [30.0, 1.0]
    assert len(model.calls) == 1
    cached = emb.embed_soon("what did I say about tomatoes?")
    assert cached.done() and cached.result().tolist() == [30.0, 1.0]
    assert emb.embed(["what did I say about tomatoes?"]).tolist() == [[30.0, 1.0]] and len(model.calls) == 1
    assert model.calls[0][0] != threading.get_ident()


def test_embed_soon_hands_the_error_to_the_caller_and_caches_nothing() -> None:
    model = FakeModel(fail_on="boom")
    emb = FakeModelEmbedder(model)
    with pytest.raises(RuntimeError, match="blew up"):
        emb.embed_soon("boom").result(timeout=5)
    with pytest.raises(RuntimeError, match="blew up"):  # tried again, not served a cached failure
        emb.embed_soon("boom").result(timeout=5)
    assert len(model.calls) == 2
