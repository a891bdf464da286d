"""Tokenizers with one small interface: encode, decode, pad_id, bos_id, eos_id, vocab_size.

`ByteTokenizer` needs no files (the synthetic tasks use it); `HFTokenizer` reads a Hugging Face
`tokenizer.json` directory (Llama-3, Gemma, ...). `load_tokenizer(spec)` picks one from a string.
"""

import json
import os
from collections.abc import Sequence

import tokenizers


class ByteTokenizer:
  """UTF-8 bytes: pad=0, bos=1, eos=2, byte b -> b + 3."""

  pad_id, bos_id, eos_id = 0, 1, 2
  offset = 3
  vocab_size = 256 + offset

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    ids = [b + self.offset for b in text.encode("utf-8")]
    return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

  def decode(self, ids: Sequence[int]) -> str:
    """Bytes up to the first eos; pad/bos and ids past the bytes (a model's own special tokens,
    e.g. media or series placeholders) skipped; invalid UTF-8 replaced."""
    out = bytearray()
    for i in ids:
      i = int(i)
      if i == self.eos_id:
        break
      if self.offset <= i < self.vocab_size:
        out.append(i - self.offset)
    return out.decode("utf-8", errors="replace")


_BOS_NAMES = ("<|begin_of_text|>", "<bos>", "<s>", "[CLS]")  # [CLS] / [SEP]: BERT
_EOS_NAMES = ("<|end_of_text|>", "<|eot_id|>", "<eos>", "</s>", "<|endoftext|>", "[SEP]")
_PAD_NAMES = ("<pad>", "<|finetune_right_pad_id|>", "[PAD]", "<|pad|>")


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _token_content(value) -> str | None:
  """A special token as written in tokenizer_config.json: a string or {"content": ...}."""
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) else None


class HFTokenizer:
  """A `tokenizers.Tokenizer` with bos/eos/pad ids; special tokens are added by us, not by it."""

  def __init__(
    self, tokenizer: tokenizers.Tokenizer, *, bos_id: int | None, eos_id: int, pad_id: int
  ):
    self._tok = tokenizer
    self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

  @classmethod
  def from_dir(cls, path: str) -> "HFTokenizer":
    """Reads `path`/tokenizer.json and finds bos/eos/pad from the optional config files."""
    tok_path = os.path.join(path, "tokenizer.json")
    if not os.path.exists(tok_path):
      raise ValueError(f"No tokenizer.json in tokenizer directory {path!r}")
    tok = tokenizers.Tokenizer.from_file(tok_path)
    tok_cfg = _read_json(os.path.join(path, "tokenizer_config.json"))
    special = _read_json(os.path.join(path, "special_tokens_map.json"))
    model_cfg = _read_json(os.path.join(path, "config.json"))

    def find(key: str, names: tuple[str, ...]) -> int | None:
      for cfg in (tok_cfg, special):
        token = _token_content(cfg.get(key))
        if token is not None and tok.token_to_id(token) is not None:
          return tok.token_to_id(token)
      value = model_cfg.get(f"{key}_id")
      if isinstance(value, list):
        value = value[0] if value else None
      if isinstance(value, int):
        return value
      for name in names:
        if tok.token_to_id(name) is not None:
          return tok.token_to_id(name)
      return None

    bos_id = find("bos_token", _BOS_NAMES)
    eos_id = find("eos_token", _EOS_NAMES)
    pad_id = find("pad_token", _PAD_NAMES)
    if eos_id is None:
      raise ValueError(f"Could not find an eos token for the tokenizer in {path!r}")
    return cls(tok, bos_id=bos_id, eos_id=eos_id, pad_id=eos_id if pad_id is None else pad_id)

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    ids = list(self._tok.encode(text, add_special_tokens=False).ids)
    bos = [self.bos_id] if add_bos and self.bos_id is not None else []
    return bos + ids + ([self.eos_id] if add_eos else [])

  def decode(self, ids: Sequence[int]) -> str:
    """Text up to the first eos; pad/bos and other special tokens skipped.

    Leading pad/bos are skipped first, so left padding works even when pad_id == eos_id.
    """
    ids = [int(i) for i in ids]
    start = 0
    while start < len(ids) and ids[start] in (self.pad_id, self.bos_id):
      start += 1
    out = []
    for i in ids[start:]:
      if i == self.eos_id:
        break
      if i not in (self.pad_id, self.bos_id):
        out.append(i)
    return self._tok.decode(out, skip_special_tokens=True)


def load_tokenizer(spec: str):
  """'byte' -> ByteTokenizer; a directory holding tokenizer.json -> HFTokenizer."""
  if spec == "byte":
    return ByteTokenizer()
  if os.path.isdir(spec) and os.path.exists(os.path.join(spec, "tokenizer.json")):
    return HFTokenizer.from_dir(spec)
  raise ValueError(
    f"Unknown tokenizer spec {spec!r}: expected 'byte' or a directory containing tokenizer.json"
  )
