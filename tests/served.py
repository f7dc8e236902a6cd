"""What the served-engine tests share: a free loopback port, and the tiny preset served by
vLLM's OpenAI server (its exported checkpoint and the command that serves it)."""

from __future__ import annotations

import shlex
import socket
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_checkpoint(tmp: Path) -> Path:
    """The tiny preset's weights with its round-tripping word tokenizer, as vLLM loads them."""
    from tokenwatt.models.export import export_preset, with_word_tokenizer

    return with_word_tokenizer(export_preset("tiny-llama", 0, "float32",
                                             cache_dir=tmp / "cache"), tmp / "ckpt")  # fmt: skip


def vllm_server_argv(ckpt: Path, port: int, max_num_seqs: int) -> list[str]:
    """vLLM's OpenAI server for the tiny preset on 127.0.0.1:port (CPU build, eager)."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(ckpt),
            "--served-model-name", "preset:tiny-llama", "--dtype", "float32", "--host",
            "127.0.0.1", "--port", str(port), "--max-model-len", "128", "--max-num-seqs",
            str(max_num_seqs), "--enforce-eager"]  # fmt: skip


def vllm_launch(ckpt: Path, port: int, max_num_seqs: int) -> str:
    """The same, as a --launch command."""
    return shlex.join(vllm_server_argv(ckpt, port, max_num_seqs))
