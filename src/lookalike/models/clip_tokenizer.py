"""CLIP's byte-level BPE as a Hugging Face ``tokenizer.json``, built from open_clip's vocabulary file.

Ready CLIP exports (immich's, Hugging Face's) ship ``tokenizer.json``; an OpenCLIP model exported by
hand has only ``bpe_simple_vocab_16e6.txt.gz`` from the open_clip wheel. This writes the same BPE in
the format the ``tokenizers`` library reads, so both kinds of folder are used the same way, with ids
equal to open_clip's ``SimpleTokenizer`` (checked in tests/models/test_clip.py).

    python -m lookalike.models.clip_tokenizer bpe_simple_vocab_16e6.txt.gz MODEL_FOLDER/textual
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
PAD = "!"  # open_clip pads with id 0, which is "!"
# open_clip's pre-tokenizer pattern, without its special tokens (tokenizers matches those itself)
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character map of GPT-2 and CLIP's byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _pair(line: str) -> tuple[str, str]:
    """One merge rule of the vocabulary: two symbols."""
    first, second = line.split()
    return first, second


def build(vocab_gz: Path):
    """A ``tokenizers.Tokenizer`` equal to open_clip's SimpleTokenizer for the vocabulary ``vocab_gz``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    with gzip.open(vocab_gz) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = [_pair(line) for line in lines[1 : 49152 - 256 - 2 + 1]]
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [SOT, EOT]
    ids = {token: i for i, token in enumerate(vocab)}
    tok = Tokenizer(
        models.BPE(vocab=ids, merges=merges, unk_token=EOT, end_of_word_suffix="</w>", continuing_subword_prefix="")
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.RobertaProcessing(
        (EOT, ids[EOT]), (SOT, ids[SOT]), trim_offsets=False, add_prefix_space=False
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(SOT, special=True), AddedToken(EOT, special=True)])
    return tok


def write(vocab_gz: Path, textual_dir: Path) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (its pad token) into a CLIP folder's textual/."""
    textual_dir.mkdir(parents=True, exist_ok=True)
    build(vocab_gz).save(str(textual_dir / "tokenizer.json"))
    config = {"pad_token": PAD, "bos_token": SOT, "eos_token": EOT, "model_max_length": 77}
    (textual_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


if __name__ == "__main__":  # pragma: no cover - a recipe step, exercised through write() in the tests
    if len(sys.argv) != 3:
        sys.exit("usage: python -m lookalike.models.clip_tokenizer bpe_simple_vocab_16e6.txt.gz MODEL_FOLDER/textual")
    write(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"wrote {sys.argv[2]}/tokenizer.json and tokenizer_config.json")
