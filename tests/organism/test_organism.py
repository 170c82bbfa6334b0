import pytest
import torch
from transformers import AutoModelForCausalLM

from llmbio.corpus import pack_documents
from llmbio.organism import build_model, save_model, train_model
from llmbio.tokenizer import encode, load_tokenizer


def _setup(cfg, tok, corpus):
    seqs = pack_documents(tok(list(corpus["text"]))["input_ids"], cfg.train.seq_len)
    return build_model(cfg.model, tok, cfg.train.seed), seqs


def test_training_lowers_loss_and_is_seeded(tiny_cfg, tiny_tokenizer, tiny_corpus, tmp_path):
    m1, seqs = _setup(tiny_cfg, tiny_tokenizer, tiny_corpus)
    c1 = train_model(m1, seqs, tiny_cfg.train, tmp_path / "a", progress=False)
    m2, _ = _setup(tiny_cfg, tiny_tokenizer, tiny_corpus)
    c2 = train_model(m2, seqs, tiny_cfg.train, tmp_path / "b", progress=False)
    assert c1["loss"].iloc[-1] < c1["loss"].iloc[0] - 0.5
    assert c1["loss"].tolist() == c2["loss"].tolist()


class _Interrupting:
    """Packed sequences that raise on the ``after``-th batch, like a killed job."""

    def __init__(self, seqs, after):
        self.seqs, self.after, self.calls = seqs, after, 0

    def __len__(self):
        return len(self.seqs)

    def __getitem__(self, idx):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return self.seqs[idx]


def test_resume_matches_uninterrupted_training(tiny_cfg, tiny_tokenizer, tiny_corpus, tmp_path):
    ref, seqs = _setup(tiny_cfg, tiny_tokenizer, tiny_corpus)
    train_model(ref, seqs, tiny_cfg.train, tmp_path / "ref", progress=False)
    m, _ = _setup(tiny_cfg, tiny_tokenizer, tiny_corpus)
    with pytest.raises(KeyboardInterrupt):
        train_model(m, _Interrupting(seqs, 11), tiny_cfg.train, tmp_path / "ck", progress=False)
    assert (tmp_path / "ck" / "state.json").exists()
    resumed, _ = _setup(tiny_cfg, tiny_tokenizer, tiny_corpus)
    train_model(resumed, seqs, tiny_cfg.train, tmp_path / "ck", progress=False)
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_checkpoint_of_another_config_is_ignored(tiny_cfg, tiny_tokenizer, tiny_corpus, tmp_path):
    m, seqs = _setup(tiny_cfg, tiny_tokenizer, tiny_corpus)
    with pytest.raises(KeyboardInterrupt):
        train_model(
            m,
            _Interrupting(seqs, 6),
            tiny_cfg.train,
            tmp_path,
            progress=False,
            fingerprint={"a": 1},
        )
    m2, _ = _setup(tiny_cfg, tiny_tokenizer, tiny_corpus)
    curve = train_model(m2, seqs, tiny_cfg.train, tmp_path, progress=False, fingerprint={"a": 2})
    assert curve["step"].iloc[0] == 0


def test_save_load_round_trip(tiny_cfg, tiny_tokenizer, tmp_path):
    model = build_model(tiny_cfg.model, tiny_tokenizer, 0).eval()
    save_model(model, tiny_tokenizer, tmp_path / "model")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    tok = load_tokenizer(tmp_path / "model")
    ids = torch.tensor([encode(tok, "calc: 3+4=")])
    torch.testing.assert_close(model(ids).logits, loaded(ids).logits)
    assert (tmp_path / "model" / "model.safetensors").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_matches_cpu_and_resumes(tiny_cfg, tiny_tokenizer, tiny_corpus, tmp_path):
    cpu, seqs = _setup(tiny_cfg, tiny_tokenizer, tiny_corpus)
    c_cpu = train_model(cpu, seqs, tiny_cfg.train, tmp_path / "cpu", progress=False)
    gpu, _ = _setup(tiny_cfg, tiny_tokenizer, tiny_corpus)
    c_gpu = train_model(gpu.cuda(), seqs, tiny_cfg.train, tmp_path / "gpu", progress=False)
    assert c_gpu["loss"].iloc[0] == pytest.approx(c_cpu["loss"].iloc[0], rel=1e-4)
    assert c_gpu["loss"].iloc[-1] == pytest.approx(c_cpu["loss"].iloc[-1], rel=0.02)
    m, _ = _setup(tiny_cfg, tiny_tokenizer, tiny_corpus)
    with pytest.raises(KeyboardInterrupt):
        train_model(
            m.cuda(), _Interrupting(seqs, 11), tiny_cfg.train, tmp_path / "ck", progress=False
        )
    resumed, _ = _setup(tiny_cfg, tiny_tokenizer, tiny_corpus)
    train_model(resumed.cuda(), seqs, tiny_cfg.train, tmp_path / "ck", progress=False)
    for (k, a), b in zip(gpu.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


def test_training_on_a_missing_gpu_fails_with_the_fix(tiny_cfg, tmp_path):
    import dataclasses

    from llmbio.stages.organism import train_stage

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, device="cuda"))
    with pytest.raises(RuntimeError, match="CUDA is not available.*'auto' or 'cpu'"):
        train_stage(cfg, tmp_path / "no-corpus", tmp_path / "no-tok", tmp_path / "m",
                    tmp_path / "c.parquet", tmp_path / "ck")  # fmt: skip
